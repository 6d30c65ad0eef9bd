"""One served `sessions.sqlite3`: its long-lived read-only connection, what is known of its
rows, and whether it can be read at all.

Every query runs under the database's lock (the connection is shared by the indexer, the
socket server's workers and the history sink) inside one short deferred transaction, so the
agent's writers never wait on sessiond (docs/storage.md, "Reading without writing").
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum

from sessionctl import store
from sessionctl.store import Row, StoredSession, StoreError

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0


class DbState(Enum):
    ABSENT = "absent"  # no database file in the folder
    OK = "ok"
    FAILED = "failed"  # cannot be read now; retried with backoff


HEADER_CHUNK = 500  # headers read per transaction: short ones, and few strings alive at once


@dataclass
class Diff:
    """What changed in the rows since the last poll."""

    changed: list[str] = field(default_factory=list)  # ids of new rows and higher revisions
    removed: list[str] = field(default_factory=list)  # ids whose row vanished


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Database:
    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.path = store.database_path(folder)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._data_version: int | None = None
        self.revisions: dict[str, int] = {}  # id -> revision of the rows indexed
        self.state = DbState.ABSENT
        self.error: str | None = None
        self.failures = 0
        self.retry_at = 0.0
        self.polled_at = 0.0
        self.polls = 0
        self.invalid: dict[str, str] = {}  # id -> why its header cannot be served

    # --- connection --------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        identity = _identity(self.path)
        if self._conn is not None and identity == self._identity:
            return self._conn
        self._close()
        if identity is None:
            raise FileNotFoundError(self.path)
        self._conn = store.open_readonly(self.path)
        self._identity = identity
        self._data_version = None
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
        self._conn = None
        self._identity = None
        self._data_version = None

    def close(self) -> None:
        with self._lock:
            self._close()

    # --- polling -------------------------------------------------------------------------------

    def due(self, now: float) -> bool:
        """A failed database is retried only once its backoff has passed."""
        return self.state is not DbState.FAILED or now >= self.retry_at

    def poll(self, force: bool = False) -> Diff:
        """The rows' changes since the last poll. `data_version` settles "nothing new" with one
        pragma; `force` diffs the revisions anyway. A database that vanished, or could not be
        read, yields no change to the rows known (a failure keeps them served as they were,
        an absent file removes them all). Raises StoreError after recording the failure."""
        with self._lock:
            self.polled_at = time.monotonic()
            self.polls += 1
            try:
                return self._poll(force)
            except FileNotFoundError:
                self._close()
                self.state, self.error, self.failures = DbState.ABSENT, None, 0
                gone = Diff(removed=sorted(self.revisions))
                self.revisions = {}
                return gone
            except (StoreError, sqlite3.Error) as exc:
                self._close()
                self._failed(str(exc))
                raise StoreError(self.error or str(exc)) from None

    def _poll(self, force: bool) -> Diff:
        conn = self._connect()
        version = store.data_version(conn)
        if version == self._data_version and not force and self.state is DbState.OK:
            return Diff()
        revisions = store.read_revisions(conn)
        known = self.revisions
        changed = [i for i, r in revisions.items() if known.get(i) != r]
        removed = [i for i in known if i not in revisions]
        # A changed row counts as read only once its header is (headers()): until then a known
        # one keeps its old revision, so a failure on the way leaves it to the next diff.
        unread = set(changed)
        self.revisions = {i: r for i, r in revisions.items() if i not in unread}
        self.revisions.update((i, known[i]) for i in changed if i in known)
        for session_id in removed:
            self.invalid.pop(session_id, None)
        self._data_version = version
        self.state, self.error, self.failures = DbState.OK, None, 0
        return Diff(changed=changed, removed=removed)

    def headers(self, ids: list[str]) -> Iterator[tuple[list[Row], list[str]]]:
        """The rows of `ids`, `HEADER_CHUNK` per short transaction, each chunk with the ids
        that vanished since the poll (they are removals). A row read may be newer than the
        poll saw: its revision is the one remembered. Raises StoreError."""
        for start in range(0, len(ids), HEADER_CHUNK):
            part = ids[start : start + HEADER_CHUNK]
            with self._lock:
                try:
                    rows = store.read_rows(self._connect(), part)
                except FileNotFoundError:
                    rows = []
                except (StoreError, sqlite3.Error) as exc:
                    self._data_version = None  # the next poll diffs again
                    raise StoreError(f"{self.path}: {exc}") from None
                found = {row.session_id for row in rows}
                gone = [i for i in part if i not in found]
                for row in rows:
                    self.revisions[row.session_id] = row.revision
                for session_id in gone:
                    self.revisions.pop(session_id, None)
            yield rows, gone

    def _failed(self, error: str) -> None:
        self.failures += 1
        self.state, self.error = DbState.FAILED, error
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (self.failures - 1))
        self.retry_at = time.monotonic() + delay

    # --- questions -----------------------------------------------------------------------------

    def holds(self, session_id: str) -> bool:
        return session_id in self.revisions

    def read(self, session_id: str, window: int | None) -> StoredSession | None:
        """One session (None: no such row now). Raises StoreError."""
        with self._lock:
            try:
                return store.read_session(self._connect(), session_id, window)
            except FileNotFoundError:
                return None
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {exc}") from None

    def status(self) -> dict[str, object]:
        with self._lock:
            return {
                "path": self.path,
                "state": self.state.value,
                "sessions": len(self.revisions),
                "error": self.error,
                "failures": self.failures,
                "retry_in_s": round(max(0.0, self.retry_at - time.monotonic()), 3)
                if self.state is DbState.FAILED
                else None,
                "invalid_rows": len(self.invalid),
            }
