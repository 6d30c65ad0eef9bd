"""The fallback scan's side of the agent's SQLite generation: database sessions of a folder,
read read-only with the standard library's sqlite3, answered as the daemon answers them
(docs/storage.md). Standard library only."""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from typing import Any

from sessionctl import agent, store
from sessionctl.document import InvalidSession, make_header, validate_document


@dataclass(frozen=True)
class StoredLoaded:
    """One database session: its row's header, decoded and checked."""

    folder: str
    row: store.Row
    header: dict[str, Any]

    @property
    def session_id(self) -> str:
        return self.row.session_id

    @property
    def path(self) -> str:
        return os.path.join(self.folder, self.row.session_id + ".json")

    @property
    def updated_ns(self) -> int:
        return agent.parse_rfc3339_ns(self.header["updated_at"]) or 0

    @property
    def file_bytes(self) -> int:
        return store.locator_size(self.row.session_id)

    @property
    def directory(self) -> Any:
        return self.header["metadata"].get("directory")

    def header_fields(self) -> dict[str, Any]:
        head = self.header
        return make_header(
            session_id=head["id"],
            title=head.get("title"),
            created_at=head["created_at"],
            updated_at=head["updated_at"],
            directory=head["metadata"].get("directory"),
            agent=head["agent"],
            model=head["metadata"].get("model"),
            message_count=self.row.message_count,
            tool_use_count=self.row.tool_count,
            path=self.path,
            file_bytes=self.file_bytes,
            mtime_ns=self.updated_ns,
        )

    def response(self, window: int | None) -> dict[str, Any]:
        """The body of a resume/get answer; with `window`, the session read now."""
        body: dict[str, Any] = {
            "ok": True,
            "source": "scan",
            "session_id": self.session_id,
            "path": self.path,
            "header": self.header_fields(),
        }
        if window is None:
            return body
        stored = _read_session(self.folder, self.session_id, window)
        if stored is None:
            raise LookupError(f"session {self.session_id} is no longer in its database")
        fresh = _checked(self.folder, stored.row)
        if fresh is None:
            raise LookupError(f"session {self.session_id} has an unreadable header")
        body["header"] = fresh.header_fields()
        body.update(
            session=store.legacy_object(stored, fresh.header),
            dropped=stored.dropped,
            file_bytes=fresh.file_bytes,
        )
        return body


def has_database(folder: str) -> bool:
    return os.path.isfile(store.database_path(folder))


def _checked(folder: str, row: store.Row) -> StoredLoaded | None:
    try:
        header = json.loads(row.header)
        validate_document(header)
    except (ValueError, RecursionError, InvalidSession):
        return None
    if header["id"] != row.session_id:
        return None
    return StoredLoaded(folder, row, header)


def _read_session(folder: str, session_id: str, window: int | None) -> store.StoredSession | None:
    try:
        conn = store.open_readonly(store.database_path(folder))
    except store.StoreError:
        return None
    try:
        return store.read_session(conn, session_id, window)
    except (store.StoreError, sqlite3.Error):
        return None
    finally:
        conn.close()


def database_sessions(folder: str) -> list[StoredLoaded]:
    """Every loadable row of `folder`'s database; none when it cannot be read."""
    if not has_database(folder):
        return []
    try:
        conn = store.open_readonly(store.database_path(folder))
    except store.StoreError:
        return []
    try:
        rows = store.read_rows(conn)
    except sqlite3.Error:
        return []
    finally:
        conn.close()
    return [s for s in (_checked(folder, r) for r in rows) if s is not None]


def answer_order(candidate: Any) -> tuple[int, bool, str]:
    """Where a database is involved: newest `updated_at`, the row first, the greater id."""
    if isinstance(candidate, StoredLoaded):
        return (candidate.updated_ns, True, candidate.session_id)
    doc = candidate.doc
    return (agent.parse_rfc3339_ns(doc["updated_at"]) or 0, False, doc["id"])
