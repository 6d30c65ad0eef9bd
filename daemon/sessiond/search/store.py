"""The search index on disk: one SQLite file in the state folder (mode 0600: it holds
transcripts), an FTS5 table of texts and a table of the session versions they came from.

Rows of the FTS5 table are numbered `doc << 24 | slot`: slot 0 is the session's title, slot
i + 1 its message i. So a session's rows are one rowid range, dropped without a scan, and a
hit names its session and message without a join on another index.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SCHEMA_VERSION = "1"
TOKENIZER = "unicode61 remove_diacritics 2"
INDEX_NAME = "search.sqlite3"
SLOT_BITS = 24
MAX_MESSAGES = (1 << SLOT_BITS) - 2  # messages past this index are not searchable
TITLE_ROLE = "title"
WAL_LIMIT_BYTES = 16 * 1024 * 1024

_SCHEMA = f"""
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE docs(
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    title TEXT,
    directory TEXT,
    updated_at TEXT NOT NULL,
    updated_ns INTEGER NOT NULL,
    version TEXT NOT NULL,
    messages INTEGER NOT NULL,
    digest BLOB NOT NULL
);
CREATE TABLE doc_workspaces(
    workspace TEXT NOT NULL,
    doc INTEGER NOT NULL,
    PRIMARY KEY (workspace, doc)
) WITHOUT ROWID;
CREATE INDEX doc_workspaces_doc ON doc_workspaces(doc);
CREATE VIRTUAL TABLE texts USING fts5(body, role UNINDEXED, tokenize='{TOKENIZER}');
"""


class IndexBroken(Exception):
    """The index file is not one this version wrote, or is damaged: it must be rebuilt."""


NO_FTS5_FAULT = "no_fts5"  # SESSIOND_TEST_FAULTS: the tests play a Python without FTS5


def fts5_missing(env: Mapping[str, str] | None = None) -> str | None:
    """Why this Python's SQLite cannot hold the index, or None when it can."""
    faults = (env or {}).get("SESSIOND_TEST_FAULTS", "")
    if NO_FTS5_FAULT in (f.strip() for f in faults.split(",")):
        return f"FTS5 turned off by SESSIOND_TEST_FAULTS={NO_FTS5_FAULT}"
    try:
        conn = sqlite3.connect(":memory:")
        try:
            conn.execute(f"CREATE VIRTUAL TABLE t USING fts5(x, tokenize='{TOKENIZER}')")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"SQLite {sqlite3.sqlite_version} has no usable FTS5 ({exc})"
    return None


def index_path(state_dir: str) -> str:
    return os.path.join(state_dir, INDEX_NAME)


def version_key(version: Iterable[int]) -> str:
    return ":".join(str(v) for v in version)


@dataclass(slots=True)
class DocState:
    id: int
    version: str
    messages: int
    digest: bytes


def connect(path: str, *, write: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    if write:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # a crash loses the last batches, not the file
        conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")  # the WAL shrinks back
    else:
        conn.execute("PRAGMA query_only = 1")
    return conn


def open_for_writing(path: str) -> tuple[sqlite3.Connection, str | None]:
    """The index at `path`, checked: a file that is foreign, of another schema, or damaged
    is removed and made anew. Returns the connection and why it was rebuilt (or None)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    reason = None
    if os.path.exists(path):
        try:
            conn = connect(path, write=True)
            try:
                check_index(conn)
                return conn, None
            except BaseException:
                conn.close()
                raise
        except (IndexBroken, sqlite3.DatabaseError) as exc:
            reason = str(exc)[:200] or type(exc).__name__
            remove_files(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # private before any write
    os.close(fd)
    conn = connect(path, write=True)
    conn.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
    conn.executemany(
        "INSERT INTO meta(key, value) VALUES (?, ?)",
        [("schema", SCHEMA_VERSION), ("tokenizer", TOKENIZER)],
    )
    return conn, reason


def check_index(conn: sqlite3.Connection) -> None:
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as exc:
        raise IndexBroken(f"not a search index of this version ({exc})") from None
    if meta.get("schema") != SCHEMA_VERSION or meta.get("tokenizer") != TOKENIZER:
        raise IndexBroken(
            f"index schema {meta.get('schema')!r}, this version writes {SCHEMA_VERSION}"
        )
    problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise IndexBroken("damaged: " + "; ".join(problems[:3]))


def remove_files(path: str) -> None:
    for name in (path, path + "-wal", path + "-shm", path + "-journal"):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


def read_states(conn: sqlite3.Connection) -> dict[str, tuple[str, int]]:
    """path -> (version key, messages indexed) of every indexed session."""
    return {
        path: (version, messages)
        for path, version, messages in conn.execute("SELECT path, version, messages FROM docs")
    }


class IndexWriter:
    """Changes to the index, each doc's in the caller's transaction (`begin`/`commit`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def state(self, path: str) -> DocState | None:
        row = self.conn.execute(
            "SELECT id, version, messages, digest FROM docs WHERE path = ?", (path,)
        ).fetchone()
        return None if row is None else DocState(*row)

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM docs").fetchone()[0])

    def drop(self, path: str) -> bool:
        state = self.state(path)
        if state is None:
            return False
        self._drop_rows(state.id, first_slot=0)
        self.conn.execute("DELETE FROM doc_workspaces WHERE doc = ?", (state.id,))
        self.conn.execute("DELETE FROM docs WHERE id = ?", (state.id,))
        return True

    def _drop_rows(self, doc: int, first_slot: int) -> None:
        low = doc << SLOT_BITS | first_slot
        high = (doc << SLOT_BITS) | ((1 << SLOT_BITS) - 1)
        self.conn.execute("DELETE FROM texts WHERE rowid BETWEEN ? AND ?", (low, high))

    def upsert_doc(
        self,
        path: str,
        *,
        session_id: str,
        title: str | None,
        directory: str | None,
        workspaces: Iterable[str],
        updated_at: str,
        updated_ns: int,
        version: str,
        messages: int,
        digest: bytes,
        reindex: bool,
    ) -> int:
        """Write the session's row (and title row); with `reindex`, first drop it and its
        texts, so it comes back under a new doc id (ids grow with recency: see RANK_LIMIT)."""
        state = self.state(path)
        if state is not None and reindex:  # indexed whole again: under a new, greater doc id
            self.drop(path)
            state = None
        # The same columns in the same order for a new row and for an update.
        columns = (session_id, title, directory, updated_at, updated_ns, version, messages, digest)
        if state is None:
            cursor = self.conn.execute(
                "INSERT INTO docs(path, session_id, title, directory, updated_at, updated_ns,"
                " version, messages, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (path, *columns),
            )
            doc = cursor.lastrowid
            assert doc is not None
        else:
            doc = state.id
            self.conn.execute(
                "UPDATE docs SET session_id = ?, title = ?, directory = ?, updated_at = ?,"
                " updated_ns = ?, version = ?, messages = ?, digest = ? WHERE id = ?",
                (*columns, doc),
            )
            self.conn.execute("DELETE FROM doc_workspaces WHERE doc = ?", (doc,))
            # The session grew: its messages stay, its title row is written anew.
            self.conn.execute("DELETE FROM texts WHERE rowid = ?", (doc << SLOT_BITS,))
        self.conn.executemany(
            "INSERT OR IGNORE INTO doc_workspaces(workspace, doc) VALUES (?, ?)",
            [(w, doc) for w in workspaces],
        )
        if title:
            self.conn.execute(
                "INSERT INTO texts(rowid, body, role) VALUES (?, ?, ?)",
                (doc << SLOT_BITS, title, TITLE_ROLE),
            )
        return doc

    def add_messages(self, doc: int, messages: Iterable[tuple[int, str, str]]) -> int:
        """Add (index, role, text) rows; returns how many."""
        rows = [
            (doc << SLOT_BITS | (index + 1), text, role)
            for index, role, text in messages
            if index <= MAX_MESSAGES
        ]
        self.conn.executemany("INSERT INTO texts(rowid, body, role) VALUES (?, ?, ?)", rows)
        return len(rows)
