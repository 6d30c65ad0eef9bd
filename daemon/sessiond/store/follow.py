"""The served folders' databases, kept in step with the index.

Used by the indexer thread to open, poll and close databases, and to ask whether a file path
is a database session's slot (the row wins over a legacy file of the same id). The socket
server's tails and the history sink read sessions through `read()`. A database that cannot
be read is logged once per failure streak, retried with backoff, and reported in `status`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sessionctl.document import InvalidSession
from sessionctl.regular import read_prefix
from sessionctl.store import (
    DATABASE_NAME,
    LOCATOR_PREFIX,
    Row,
    StoredSession,
    StoreError,
    is_locator,
)

from sessiond import trim_memory
from sessiond.index.database_records import StoredRecord, stored_record
from sessiond.index.records import SessionRecord, split_session_path
from sessiond.logs import log_event
from sessiond.store.database import Database, DbState

TRIM_AFTER_ROWS = 1000
POLL_INTERVAL_S = 2.0  # the slow timer: databases are polled even without an event


@dataclass
class Applied:
    """What one poll did to the index: records saved and removed, slots to look at again."""

    saved: list[SessionRecord] = field(default_factory=list)
    removed: list[SessionRecord] = field(default_factory=list)
    released: list[str] = field(default_factory=list)  # paths a row no longer holds


def is_database_event(name: str) -> bool:
    """The files whose events may mean a commit: the database and its WAL."""
    return name in (DATABASE_NAME, DATABASE_NAME + "-wal")


class StoreSet:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dbs: dict[str, Database] = {}
        self._dangling: set[str] = set()  # locators whose row the database does not hold

    # --- indexer thread ----------------------------------------------------------------------

    def poll(
        self,
        folder: str,
        upsert: Callable[[SessionRecord], SessionRecord | None],
        remove: Callable[[str], SessionRecord | None],
        force: bool = False,
    ) -> Applied:
        """Bring the index up to date with `folder`'s database (opening it when it appeared).
        `upsert`/`remove` are the index's."""
        applied = Applied()
        with self._lock:
            db = self._dbs.get(folder)
        if db is None:
            if not os.path.isfile(os.path.join(folder, DATABASE_NAME)):
                return applied
            db = Database(folder)
            with self._lock:
                self._dbs[folder] = db
            force = True
        if db.state is DbState.FAILED:  # retried once its backoff has passed, then in full
            if not db.due(time.monotonic()) and not force:
                return applied
            force = True
        was = db.state
        try:
            diff = db.poll(force)
        except StoreError as exc:
            if was is not DbState.FAILED:  # once per failure streak, not per retry
                log_event(
                    "store_unreadable",
                    logging.ERROR,
                    path=db.path,
                    error=str(exc)[:300],
                    retry_in_s=round(max(0.0, db.retry_at - time.monotonic()), 3),
                )
            return applied
        if was is DbState.FAILED:
            log_event("store_readable", path=db.path, sessions=len(db.revisions))
        elif was is DbState.ABSENT and db.state is DbState.OK:
            log_event("store_opened", path=db.path, sessions=len(db.revisions))
        try:
            for rows, gone in db.headers(diff.changed):
                for row in rows:
                    self._index_row(db, row, upsert, remove, applied)
                diff.removed.extend(gone)
        except StoreError as exc:  # the next poll diffs again
            log_event("store_unreadable", logging.ERROR, path=db.path, error=str(exc)[:300],
                      retry_in_s=None)  # fmt: skip
        for session_id in diff.removed:
            path = os.path.join(folder, session_id + ".json")
            old = remove(path)
            if old is not None:
                applied.removed.append(old)
            applied.released.append(path)
        if db.state is DbState.ABSENT:
            with self._lock:
                self._dbs.pop(folder, None)
        if len(diff.changed) >= TRIM_AFTER_ROWS:
            trim_memory.trim()  # reading many headers leaves the heap full of freed holes
        return applied

    def _index_row(
        self,
        db: Database,
        row: Row,
        upsert: Callable[[SessionRecord], SessionRecord | None],
        remove: Callable[[str], SessionRecord | None],
        applied: Applied,
    ) -> None:
        folder = db.folder
        try:
            record = stored_record(
                folder, row.revision, row.header, row.message_count, row.tool_count
            )
            if record.session_id != row.session_id:
                raise InvalidSession(f"its header's id is {record.session_id!r}")
        except InvalidSession as exc:
            why = str(exc)[:200]
            if db.invalid.get(row.session_id) != why:
                log_event("store_row_invalid", logging.WARNING, path=db.path,
                          session_id=row.session_id, error=why)  # fmt: skip
            db.invalid[row.session_id] = why
            old = remove(os.path.join(folder, row.session_id + ".json"))
            if old is not None and isinstance(old, StoredRecord):
                applied.removed.append(old)
            return
        db.invalid.pop(row.session_id, None)
        record.session_id = row.session_id  # one string for the record and the revisions
        with self._lock:
            self._dangling.discard(record.path)
        upsert(record)
        applied.saved.append(record)

    def folders(self) -> list[str]:
        with self._lock:
            return list(self._dbs)

    def due_folders(self, now: float) -> list[str]:
        """Databases whose slow-timer poll or failure retry has come."""
        with self._lock:
            dbs = list(self._dbs.values())
        return [
            db.folder
            for db in dbs
            if (db.state is DbState.FAILED and now >= db.retry_at)
            or (db.state is DbState.OK and now - db.polled_at >= POLL_INTERVAL_S)
        ]

    def locator_seen(self, path: str) -> None:
        """A locator at `path`: without a row it is dangling (the agent cannot load it either,
        docs/storage.md), which is reported once."""
        folder = os.path.dirname(path)
        with self._lock:
            db = self._dbs.get(folder)
            if db is not None and db.state is DbState.FAILED:
                return  # the database's failure is the report
            if db is not None and db.holds(split_session_path(path)[1]):
                self._dangling.discard(path)
                return
            if path in self._dangling:
                return
            self._dangling.add(path)
        log_event("store_locator_dangling", logging.WARNING, path=path,
                  database=db.path if db else None)  # fmt: skip

    def is_locator_file(self, path: str) -> bool:
        """Whether `path` holds a locator now and no row claims it."""
        if self.claims(path):
            return False
        try:
            return is_locator(read_prefix(path, len(LOCATOR_PREFIX)))
        except OSError:  # gone, unreadable, or no regular file (a FIFO would block a read)
            return False

    def file_gone(self, path: str) -> None:
        with self._lock:
            self._dangling.discard(path)

    def dangling(self) -> list[str]:
        with self._lock:
            return sorted(self._dangling)

    def drop(self, folder: str) -> None:
        """The folder is no longer served: close its connection."""
        with self._lock:
            db = self._dbs.pop(folder, None)
            self._dangling = {p for p in self._dangling if os.path.dirname(p) != folder}
        if db is not None:
            db.close()

    def close(self) -> None:
        with self._lock:
            dbs, self._dbs = list(self._dbs.values()), {}
        for db in dbs:
            db.close()

    # --- any thread ----------------------------------------------------------------------------

    def has_database(self, folder: str) -> bool:
        with self._lock:
            return folder in self._dbs

    def claims(self, path: str) -> bool:
        """Whether `path` (`<folder>/<id>.json`) is the slot of a row of the folder's database."""
        folder, stem = split_session_path(path)
        with self._lock:
            db = self._dbs.get(folder)
        return db is not None and db.holds(stem)

    def revision(self, path: str) -> int | None:
        """The indexed revision of the row whose slot is `path`; None when no row holds it."""
        folder, stem = split_session_path(path)
        with self._lock:
            db = self._dbs.get(folder)
        return None if db is None else db.revisions.get(stem)

    def read(self, folder: str, session_id: str, window: int | None) -> StoredSession | None:
        """A database session read now (None: no row). Raises StoreError."""
        with self._lock:
            db = self._dbs.get(folder)
        if db is None:
            return None
        return db.read(session_id, window)

    def status(self) -> list[dict[str, object]]:
        with self._lock:
            dbs = sorted(self._dbs.values(), key=lambda d: d.path)
        return [db.status() for db in dbs]


SHARED = StoreSet()
"""The daemon's one set: the indexer feeds it, tails and the sink read through it."""
