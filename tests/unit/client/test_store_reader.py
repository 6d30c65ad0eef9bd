"""The shared reader of the agent's SQLite store (sessionctl.store) on real database files
written by tests.support.agent_store: names, locators, records, blobs, windows, summaries."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from sessionctl import agent, store

from tests.support.agent_sim import new_session
from tests.support.agent_store import AgentStore, locator


@pytest.mark.parametrize(
    ("name", "is_session"),
    [
        ("abc.json", True),
        ("abc.legacy.json", False),
        ("abc.checkpoint.json", False),
        ("sessions.sqlite3", False),
        ("sessions.sqlite3-wal", False),
        ("sessions.sqlite3.json", False),
        (".tmpAbC123", False),
        (".tmpAbC123.json", False),
        (".session-xyz.json", False),
        (".workspace_index.json", False),
        (".listing_cache.json", False),
        ("abc.json.tmp", False),
    ],
)
def test_which_names_are_sessions(name: str, is_session: bool) -> None:
    assert agent.is_session_file_name(name) is is_session


def test_locators() -> None:
    session_id = "b7e1d2c3-4a5b-4c6d-8e7f-9012a3b4c5d6"
    data = store.locator_bytes(session_id)
    assert data == b'{"codetether_store":1,"id":"b7e1d2c3-4a5b-4c6d-8e7f-9012a3b4c5d6"}'
    assert data == locator(session_id)  # the test writer's own spelling agrees
    assert store.locator_size(session_id) == 66
    assert store.is_locator(data) and store.locator_id(data) == session_id
    assert not store.is_locator(b'{"id":"x","codetether_store":1}')
    assert not store.is_locator(b'{"codetether_store":1')  # shorter than the marker
    assert store.locator_id(b'{"codetether_store":1,"id":7}') is None


def test_split_record() -> None:
    message = '{"role":"user","content":[{"type":"text","text":"a, \\"b\\", c"}]}'
    assert store.split_record(f'[{message},"conversation"]') == (message, "conversation")
    for bad in ("{}", "[1]", '[{"a":1},2]'):
        with pytest.raises(store.StoreError):
            store.split_record(bad)


def _store(tmp_path: Path) -> tuple[AgentStore, dict]:
    folder = str(tmp_path / "sessions")
    writer = AgentStore(folder)
    session = new_session(str(tmp_path))
    for number in range(5):
        session["messages"].append(
            {"role": "user", "content": [{"type": "text", "text": str(number)}]}
        )
        session["pages"].append("conversation")
        session["tool_uses"].append({"id": f"t{number}", "name": "bash"})
    session["messages"].append(
        {"role": "assistant", "content": [{"type": "text", "text": "z" * 70_000}]}
    )
    session["pages"].append("conversation")
    writer.save(session)
    return writer, session


def test_a_window_reads_the_last_rows_with_blobs_resolved(tmp_path: Path) -> None:
    writer, session = _store(tmp_path)
    conn = store.open_readonly(writer.path)
    try:
        whole = store.read_session(conn, session["id"])
        assert whole is not None and whole.dropped == 0
        assert [json.loads(m) for m in whole.messages] == session["messages"]
        stored = store.read_session(conn, session["id"], 2)
        assert stored is not None
        assert [json.loads(m) for m in stored.messages] == session["messages"][-2:]
        assert [json.loads(t) for t in stored.tool_uses] == session["tool_uses"][-2:]
        assert stored.dropped == (6 - 2) + (5 - 2)
        assert store.read_session(conn, "no-such-id") is None
        header = json.loads(stored.row.header)
        shaped = store.legacy_object(stored, header)
        assert list(shaped) == [
            "id", "title", "created_at", "updated_at", "metadata", "agent", "messages",
            "pages", "summary_index", "tool_uses", "usage",
        ]  # fmt: skip
        assert list(shaped["usage"]) == list(session["usage"])
        assert shaped["metadata"] == session["metadata"]
        assert store.history_lines(whole).count(b"\n") == 6
    finally:
        conn.close()


def test_manual_summaries_are_rebuilt_as_the_agent_loads_them(tmp_path: Path) -> None:
    writer, session = _store(tmp_path)
    conn = sqlite3.connect(writer.path)
    node = {"content": "sum", "target_tokens": 10, "granularity": "turn", "generation": 0}
    for start, end in ((0, 2), (2, 4), (4, 9)):  # the last ends past the messages: left out
        conn.execute(
            "INSERT INTO projections VALUES (?,?,?,?,?)",
            (session["id"], "manual_summary", start, end, json.dumps(node)),
        )
    conn.commit()
    conn.close()
    reader = store.open_readonly(writer.path)
    try:
        stored = store.read_session(reader, session["id"], 4)  # the window starts at 2
        assert stored is not None
        index = store.summary_index(stored.summaries, json.loads)
    finally:
        reader.close()
    assert index == {
        "tree": [[{"start": 0, "end": 2}, node]],
        "generation": 0,
        "lru_order": [{"start": 0, "end": 2}],
    }


def test_a_newer_schema_and_a_missing_file_are_refused(tmp_path: Path) -> None:
    writer, _ = _store(tmp_path)
    conn = sqlite3.connect(writer.path)
    conn.execute("PRAGMA user_version=3")
    conn.close()
    with pytest.raises(store.NewerStore):
        store.open_readonly(writer.path)
    with pytest.raises(store.StoreError):
        store.open_readonly(os.path.join(tmp_path, "nothing", "sessions.sqlite3"))
    assert not os.path.exists(os.path.join(tmp_path, "nothing"))


def test_the_reader_cannot_write(tmp_path: Path) -> None:
    writer, session = _store(tmp_path)
    conn = store.open_readonly(writer.path)
    try:
        with pytest.raises(sqlite3.Error):
            conn.execute("DELETE FROM sessions")
        with pytest.raises(sqlite3.Error):
            conn.execute("CREATE TABLE mine (x)")
        assert store.read_revisions(conn) == {session["id"]: 1}
        assert [r.revision for r in store.read_rows(conn, [session["id"], "nope"])] == [1]
    finally:
        conn.close()
