"""The search index file on its own (sessiond.search.store, ranking.run_query), on real SQLite
files: ranking and its cap, what growth and edits do to a session's rows, and that a foreign
or outdated file is rebuilt."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sessiond.search.query import to_fts
from sessiond.search.ranking import run_query
from sessiond.search.store import (
    SLOT_BITS,
    IndexWriter,
    connect,
    open_for_writing,
    read_states,
)


def add_session(
    writer: IndexWriter,
    path: str,
    texts: list[str],
    *,
    updated_ns: int = 0,
    title: str | None = None,
    reindex: bool = True,
    start: int = 0,
    workspaces: tuple[str, ...] = ("/ws",),
) -> int:
    doc = writer.upsert_doc(
        path,
        session_id=os.path.basename(path),
        title=title,
        directory="/ws",
        workspaces=workspaces,
        updated_at=str(updated_ns),
        updated_ns=updated_ns,
        version=f"v{len(texts)}",
        messages=start + len(texts),
        digest=b"d",
        reindex=reindex,
    )
    writer.add_messages(doc, [(start + i, "user", t) for i, t in enumerate(texts)])
    return doc


def index(tmp_path: Path) -> tuple[IndexWriter, sqlite3.Connection, str]:
    path = str(tmp_path / "state" / "search.sqlite3")
    conn, reason = open_for_writing(path)
    assert reason is None
    assert os.stat(path).st_mode & 0o777 == 0o600
    return IndexWriter(conn), connect(path, write=False), path


def search(reader: sqlite3.Connection, query: str, **kw: object) -> tuple[list[dict], int]:
    args = {"workspace": None, "limit": 100, "offset": 0, **kw}
    return run_query(reader, to_fts(query), **args)  # type: ignore[arg-type]


def test_bm25_first_then_the_newer_session(tmp_path: Path) -> None:
    writer, reader, _ = index(tmp_path)
    writer.begin()
    add_session(
        writer, "/s/old", ["ferret ferret ferret", "ferret and many other words here"], updated_ns=1
    )
    add_session(writer, "/s/new", ["ferret and many other words here"], updated_ns=2)
    writer.commit()
    hits, total = search(reader, "ferret")
    assert total == 3
    assert [(h["session_id"], h["message_index"]) for h in hits] == [
        ("old", 0),  # densest first
        ("new", 0),  # the same text: the newer session wins the tie
        ("old", 1),
    ]
    assert hits[0]["snippet"] == "[ferret] [ferret] [ferret]"


def test_only_the_last_indexed_matches_are_ranked_when_too_many_match(tmp_path: Path) -> None:
    writer, reader, _ = index(tmp_path)
    writer.begin()
    for n in range(30):
        add_session(writer, f"/s/{n:02d}", ["common " * (1 + n % 3)], updated_ns=n)
    writer.commit()
    hits, total = search(reader, "common", rank_limit=10)
    assert total == 30  # counted whatever was ranked
    assert {h["session_id"] for h in hits} == {f"{n:02d}" for n in range(20, 30)}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_growth_keeps_rows_and_an_edit_moves_the_session_to_a_new_doc(tmp_path: Path) -> None:
    writer, reader, _ = index(tmp_path)
    writer.begin()
    first = add_session(writer, "/s/a", ["alpha one"], title="a title")
    add_session(writer, "/s/b", ["beta"])
    grown = add_session(writer, "/s/a", ["gamma two"], title="new title", reindex=False, start=1)
    writer.commit()
    assert grown == first
    assert [h["message_index"] for h in search(reader, "alpha")[0]] == [0]
    assert [h["message_index"] for h in search(reader, "gamma")[0]] == [1]
    assert [h["role"] for h in search(reader, "title")[0]] == ["title"]
    assert search(reader, '"a title"')[1] == 0
    writer.begin()
    edited = add_session(writer, "/s/a", ["delta"], reindex=True)
    writer.commit()
    assert edited > first
    assert search(reader, "alpha")[1] == search(reader, "gamma")[1] == 0
    assert search(reader, "title")[1] == 0
    rows = reader.execute("SELECT rowid FROM texts").fetchall()
    assert {r >> SLOT_BITS for (r,) in rows} == {edited, edited - 1}
    writer.begin()
    assert writer.drop("/s/a") and not writer.drop("/s/a")
    writer.commit()
    assert search(reader, "delta")[1] == 0
    assert set(read_states(reader)) == {"/s/b"}


def test_workspace_scope(tmp_path: Path) -> None:
    writer, reader, _ = index(tmp_path)
    writer.begin()
    add_session(writer, "/s/a", ["shared word"], workspaces=("/w/a", "/w/link"))
    add_session(writer, "/s/b", ["shared word"], workspaces=("/w/b",))
    writer.commit()
    assert {h["session_id"] for h in search(reader, "shared", workspace="/w/link")[0]} == {"a"}
    assert search(reader, "shared", workspace="/w/b")[1] == 1
    assert search(reader, "shared", workspace="/w")[1] == 0


def test_a_foreign_or_outdated_file_is_rebuilt(tmp_path: Path) -> None:
    path = str(tmp_path / "search.sqlite3")
    with open(path, "wb") as fh:
        fh.write(b"garbage" * 1000)
    conn, reason = open_for_writing(path)
    assert reason is not None
    assert IndexWriter(conn).count() == 0
    conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema'")
    conn.close()
    conn, reason = open_for_writing(path)
    assert reason is not None and "schema" in reason
    conn.close()
    other = sqlite3.connect(path)  # an SQLite file of someone else's
    other.executescript("DROP TABLE meta; CREATE TABLE meta(x)")
    other.close()
    conn, reason = open_for_writing(path)
    assert reason is not None
    conn.close()
    conn, reason = open_for_writing(path)
    assert reason is None
