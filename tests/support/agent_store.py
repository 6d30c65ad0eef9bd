# ruff: noqa: E501  (the schema is quoted verbatim from the agent)
"""A stand-in for the agent's SQLite session store that writes exactly as the agent does.

The schema is the agent's (`store/schema.rs`, verbatim), and so is its way of writing: a
connection opened and closed per save, `chmod 0600` on every open, `foreign_keys=ON`, WAL,
`synchronous=FULL`, `BEGIN IMMEDIATE`, `revision + 1`, only the dirty suffix of records
rewritten, bodies of 64 KiB or more stored once in `blobs` behind an `@sha256:` reference,
`events` and `commits` rows, and the locator published (tempfile, fsync, rename, folder fsync)
only after the commit. `migrate()` is the live import of a legacy file (docs/storage.md,
"Following changes"), step by step, so a test can stop between the steps.

Also a reference reader of the rows (plain SQL, written apart from sessionctl.store) that
rebuilds each session in the legacy shape, for the tests' expected answers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sessionctl.agent import canonicalize

SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (hash TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS projections (
 session_id TEXT NOT NULL, name TEXT NOT NULL, seq INTEGER NOT NULL, end_seq INTEGER NOT NULL,
 body TEXT NOT NULL, PRIMARY KEY(session_id,name,seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS projection_end ON projections(session_id,end_seq);
CREATE TABLE IF NOT EXISTS views (
 session_id TEXT NOT NULL, name TEXT NOT NULL, header TEXT NOT NULL, PRIMARY KEY(session_id,name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
 id TEXT PRIMARY KEY, revision INTEGER NOT NULL, header TEXT NOT NULL,
 message_count INTEGER NOT NULL, tool_count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS constraints (
 session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
 seq INTEGER NOT NULL, excerpt TEXT NOT NULL, PRIMARY KEY(session_id,seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
 session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
 revision INTEGER NOT NULL, kind INTEGER NOT NULL, seq INTEGER NOT NULL,
 op TEXT NOT NULL, body TEXT NOT NULL,
 PRIMARY KEY(session_id,revision,kind,seq,op)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
 session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
 kind INTEGER NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL,
 PRIMARY KEY(session_id, kind, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS consumers (
 session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
 name TEXT NOT NULL, seq INTEGER NOT NULL, revision INTEGER NOT NULL,
 PRIMARY KEY(session_id, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tool_calls (
 session_id TEXT NOT NULL, call_id TEXT NOT NULL, state TEXT NOT NULL,
 seq INTEGER NOT NULL, result_seq INTEGER, PRIMARY KEY(session_id, call_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS call_sequence ON tool_calls(session_id,seq);
CREATE INDEX IF NOT EXISTS result_sequence ON tool_calls(session_id,result_seq);
CREATE INDEX IF NOT EXISTS session_updated ON sessions(json_extract(header,'$.updated_at') DESC);
CREATE INDEX IF NOT EXISTS session_workspace ON sessions(json_extract(header,'$.metadata.directory'),json_extract(header,'$.updated_at') DESC);
CREATE TABLE IF NOT EXISTS commits (
 session_id TEXT NOT NULL, revision INTEGER NOT NULL, nonce TEXT NOT NULL UNIQUE,
 PRIMARY KEY(session_id, revision)) WITHOUT ROWID;
"""

DB_NAME = "sessions.sqlite3"
BLOB_MIN_BYTES = 65536
MESSAGE, TOOL, HEADER = 0, 1, 2
BUSY_TIMEOUT_S = 5.0


def serde(value: Any) -> str:
    """serde_json's compact form: no spaces, raw UTF-8, `/` as is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def locator(session_id: str) -> bytes:
    return b'{"codetether_store":1,"id":' + serde(session_id).encode() + b"}"


def page_of(message: dict[str, Any]) -> str:
    if message.get("role") in ("system", "developer"):
        return "bootstrap"
    if message.get("role") == "tool" or any(
        p.get("type") == "tool_result" for p in message.get("content", [])
    ):
        return "evidence"
    return "conversation"


def header_json(session: dict[str, Any], canonical: bool) -> str:
    """`store/header.rs`: `json!` of the session without transcript, keys sorted at every
    level; the directory canonicalized on ordinary saves, as written on a legacy import."""
    metadata = dict(session["metadata"])
    if canonical and metadata.get("directory"):
        metadata["directory"] = canonicalize(metadata["directory"])
    value = {
        "id": session["id"],
        "title": session.get("title"),
        "created_at": session["created_at"],
        "updated_at": session["updated_at"],
        "metadata": metadata,
        "agent": session["agent"],
        "usage": session["usage"],
        "messages": [],
        "pages": [],
        "tool_uses": [],
    }
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


@dataclass
class SaveStats:
    waits_s: list[float] = field(default_factory=list)  # BEGIN IMMEDIATE .. lock held
    commits_s: list[float] = field(default_factory=list)  # BEGIN .. COMMIT returned

    @property
    def longest_wait_s(self) -> float:
        return max(self.waits_s, default=0.0)


class AgentStore:
    """One sessions folder of the agent's store generation."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.path = os.path.join(folder, DB_NAME)
        self._saved: dict[str, tuple[int, int, int, str]] = {}  # id -> (rev, msgs, tools, header)
        self.stats = SaveStats()
        self._held: sqlite3.Connection | None = None

    def hold(self) -> None:
        """Keep one connection open for every later save (not the agent's way, which opens and
        closes one per save: a long-lived writer's commits show only as WAL writes)."""
        self._held = self._open()

    def release(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None

    # --- connection: `store/connection.rs` ------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        os.makedirs(self.folder, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        os.chmod(self.path, 0o600)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > 2:
            conn.close()
            raise RuntimeError("session database requires a newer runtime")
        if version < 2:
            conn.execute("BEGIN")
            for statement in _statements():
                conn.execute(statement)
            conn.execute("PRAGMA user_version=2")
            conn.execute("COMMIT")
        return conn

    # --- saves: `store/save.rs`, `transaction.rs` -----------------------------------------------

    def save(
        self,
        session: dict[str, Any],
        *,
        rewrite_from: int | None = None,
        publish_locator: bool = True,
        canonical: bool = True,
    ) -> int:
        """Commit `session`'s changes as one transaction at revision + 1; return the revision.
        Records from the last saved count on are written (`rewrite_from` rewrites an earlier
        suffix, as an edit or `/undo` does). An unchanged save opens no database."""
        if self._unchanged(session, rewrite_from, canonical):
            return self._saved[session["id"]][0]
        conn = self._held or self._open()
        try:
            began = time.monotonic()
            conn.execute("BEGIN IMMEDIATE")
            self.stats.waits_s.append(time.monotonic() - began)
            revision = self._write(conn, session, rewrite_from, canonical)
            conn.execute("COMMIT")
            self.stats.commits_s.append(time.monotonic() - began)
        finally:
            if conn is not self._held:
                conn.close()
        if publish_locator:
            self.publish_locator(session["id"])
        return revision

    def save_many(self, sessions: list[dict[str, Any]]) -> None:
        """New sessions in one transaction, then their locators: the rows are those `save`
        writes, without a commit (and its fsyncs) each. For building large corpora."""
        conn = self._open()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for session in sessions:
                self._write(conn, session, None, True)
            conn.execute("COMMIT")
        finally:
            conn.close()
        for session in sessions:
            self.publish_locator(session["id"])

    def _unchanged(
        self, session: dict[str, Any], rewrite_from: int | None, canonical: bool
    ) -> bool:
        saved = self._saved.get(session["id"])
        if saved is None or rewrite_from is not None:
            return False
        _, messages, tools, header = saved
        return (
            header == header_json(session, canonical)
            and messages == len(session["messages"])
            and tools == len(session["tool_uses"])
        )

    def _write(
        self,
        conn: sqlite3.Connection,
        session: dict[str, Any],
        rewrite_from: int | None,
        canonical: bool,
    ) -> int:
        """One save's rows, inside the caller's `BEGIN IMMEDIATE`."""
        session_id = session["id"]
        rev, saved_msgs, saved_tools, _ = self._saved.get(session_id, (0, 0, 0, ""))
        header = header_json(session, canonical)
        messages, tools = session["messages"], session["tool_uses"]
        start = saved_msgs if rewrite_from is None else min(rewrite_from, saved_msgs)
        start = min(start, len(messages))
        tool_start = min(saved_tools, len(tools))
        pages = list(session.get("pages", []))
        row = conn.execute("SELECT revision FROM sessions WHERE id=?", (session_id,)).fetchone()
        if (row[0] if row else 0) != rev:
            conn.execute("ROLLBACK")
            raise RuntimeError("SESSION_REVISION_CONFLICT")
        new_rev = rev + 1
        conn.execute(
            "INSERT INTO sessions VALUES (?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
            "revision=excluded.revision,header=excluded.header,"
            "message_count=excluded.message_count,tool_count=excluded.tool_count",
            (session_id, new_rev, header, len(messages), len(tools)),
        )
        conn.execute(
            "INSERT INTO events VALUES (?,?,?,?,?,?)",
            (session_id, new_rev, HEADER, 0, "header", header),
        )
        nonce = hashlib.sha256(session_id.encode())
        nonce.update(rev.to_bytes(8, "little") + header.encode())
        for kind, begin, items in ((MESSAGE, start, messages), (TOOL, tool_start, tools)):
            conn.execute(
                "DELETE FROM records WHERE session_id=? AND kind=? AND seq>=?",
                (session_id, kind, begin),
            )
            conn.execute(
                "INSERT INTO events VALUES (?,?,?,?,?,?)",
                (session_id, new_rev, kind, begin, "truncate", ""),
            )
            for seq in range(begin, len(items)):
                if kind == MESSAGE:
                    page = pages[seq] if seq < len(pages) else page_of(items[seq])
                    body = "[" + serde(items[seq]) + "," + serde(page) + "]"
                else:
                    body = serde(items[seq])
                stored = self._put_blob(conn, body)
                nonce.update(body.encode())
                conn.execute(
                    "INSERT INTO records VALUES (?,?,?,?)", (session_id, kind, seq, stored)
                )
                conn.execute(
                    "INSERT INTO events VALUES (?,?,?,?,?,?)",
                    (session_id, new_rev, kind, seq, "put", stored),
                )
        conn.execute("INSERT INTO commits VALUES (?,?,?)", (session_id, new_rev, nonce.hexdigest()))
        self._saved[session_id] = (new_rev, len(messages), len(tools), header)
        return new_rev

    def saved_ids(self) -> list[str]:
        return sorted(self._saved)

    @staticmethod
    def _put_blob(conn: sqlite3.Connection, body: str) -> str:
        if len(body.encode("utf-8")) < BLOB_MIN_BYTES:
            return body
        digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
        conn.execute("INSERT OR IGNORE INTO blobs VALUES (?,?)", (digest, body))
        return "@sha256:" + digest

    def publish_locator(self, session_id: str) -> None:
        """`marker::create`: skipped when a locator is there already, else a temp file in the
        folder, fsync, rename over `<id>.json`, fsync of the folder."""
        path = os.path.join(self.folder, session_id + ".json")
        try:
            with open(path, "rb") as fh:
                if fh.read(22) == b'{"codetether_store":1,':
                    return
        except FileNotFoundError:
            pass
        fd, tmp = tempfile.mkstemp(prefix=".tmp", dir=self.folder)
        try:
            os.write(fd, locator(session_id))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        dfd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def delete(self, session_id: str) -> None:
        """`Session::delete`: one transaction (the FK cascade removes records and events),
        then the locator."""
        conn = self._open()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for table in ("tool_calls", "commits", "views", "projections"):
                conn.execute(f"DELETE FROM {table} WHERE session_id=?", (session_id,))
            conn.execute("DELETE FROM sessions WHERE id=?", (session_id,))
            conn.execute("COMMIT")
        finally:
            conn.close()
        self._saved.pop(session_id, None)
        try:
            os.unlink(os.path.join(self.folder, session_id + ".json"))
        except FileNotFoundError:
            pass

    # --- the live import: `store/migration.rs` --------------------------------------------------

    def migrate(self, session_id: str, between: Callable[[str], None] = lambda step: None) -> int:
        """Import the legacy `<id>.json`: backup copy, hash check, commit at revision 1 (the
        header as written, not canonicalized), then the locator renamed over the file.
        `between(step)` runs after "backup" and after "commit"."""
        path = os.path.join(self.folder, session_id + ".json")
        backup = os.path.join(self.folder, session_id + ".legacy.json")
        with open(path, "rb") as fh:
            data = fh.read()
        before = hashlib.sha256(data).hexdigest()
        session = json.loads(data)
        if not os.path.exists(backup):
            shutil.copyfile(path, backup)
            shutil.copymode(path, backup)
            with open(backup, "rb+") as fh:
                os.fsync(fh.fileno())
        with open(backup, "rb") as fh:
            if hashlib.sha256(fh.read()).hexdigest() != before:
                raise RuntimeError("legacy session changed during import")
        between("backup")
        revision = self.save(session, publish_locator=False, canonical=False)
        between("commit")
        self.publish_locator(session_id)
        return revision


def _statements() -> list[str]:
    return [s.strip() for s in SCHEMA.split(";") if s.strip()]


# --- a reference reader of the rows ---------------------------------------------------------------


def _resolve(conn: sqlite3.Connection, body: str) -> str:
    if body.startswith("@sha256:"):
        (blob,) = conn.execute("SELECT body FROM blobs WHERE hash=?", (body[8:],)).fetchone()
        assert hashlib.sha256(blob.encode()).hexdigest() == body[8:], "blob mismatch"
        return str(blob)
    return body


def rows_as_sessions(folder: str) -> dict[str, dict[str, Any]]:
    """Every row of `folder`'s database rebuilt as the legacy session object (`export_json`,
    metadata compared as JSON), read with a plain connection of its own."""
    path = os.path.join(folder, DB_NAME)
    if not os.path.exists(path):
        return {}
    conn = sqlite3.connect("file:" + path + "?mode=ro", uri=True)
    try:
        out = {}
        for sid, header, mcount, tcount in conn.execute(
            "SELECT id, header, message_count, tool_count FROM sessions"
        ).fetchall():
            head = json.loads(header)
            bodies = [
                json.loads(_resolve(conn, b))
                for (b,) in conn.execute(
                    "SELECT body FROM records WHERE session_id=? AND kind=0 AND seq<? ORDER BY seq",
                    (sid, mcount),
                )
            ]
            tools = [
                json.loads(_resolve(conn, b))
                for (b,) in conn.execute(
                    "SELECT body FROM records WHERE session_id=? AND kind=1 AND seq<? ORDER BY seq",
                    (sid, tcount),
                )
            ]
            usage = head["usage"]
            out[sid] = {
                "id": head["id"],
                "title": head["title"],
                "created_at": head["created_at"],
                "updated_at": head["updated_at"],
                "metadata": head["metadata"],
                "agent": head["agent"],
                "messages": [b[0] for b in bodies],
                "pages": [b[1] for b in bodies],
                "summary_index": {"tree": [], "generation": 0, "lru_order": []},
                "tool_uses": tools,
                "usage": {
                    k: usage[k]
                    for k in (
                        "prompt_tokens",
                        "completion_tokens",
                        "total_tokens",
                        "cache_read_tokens",
                        "cache_write_tokens",
                    )
                },
            }
        return out
    finally:
        conn.close()
