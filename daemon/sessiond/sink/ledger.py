"""The upload ledger: what was last uploaded for each session, kept in the state folder.

On start the sink compares each session's file with its ledger entry and queues those that
differ, so a crash, a restart or an outage loses nothing and an unchanged session is not sent
again. Losing an entry only costs one extra upload, never a missed one, so the file is written
atomically but lazily, and a corrupt or foreign file is rebuilt, never trusted.

Each entry also says what the store should hold: the object's size, the ETag the store gave it
and the MD5 of its bytes (`fp`), so a later history that starts with exactly those bytes can be
sent as a delta, and a check at start can tell an object another writer replaced. The ids of
multipart uploads sessiond has open are written before their first part is sent, so an upload
cut short by a crash or an outage is aborted later, never left behind.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from typing import NamedTuple

import msgspec

from sessiond.atomicwrite import write_state_file
from sessiond.logs import log_event

LEDGER_NAME = "uploads.ledger"
_FORMAT = "sessiond-upload-ledger"
_VERSION = 1


class LedgerEntry(msgspec.Struct, frozen=True):
    fp: str  # MD5 of the uploaded body (history.fingerprint)
    bytes: int
    ino: int  # the session file this body was read from, to skip re-reading it on start
    size: int
    mtime_ns: int
    at: float  # wall-clock time of the upload
    # Fields added with delta uploads; an entry written before them has the defaults and is
    # uploaded whole next time.
    etag: str = ""  # the object's ETag as the store reported it ("" unknown)
    messages: int = -1  # messages in the uploaded body
    md5_etags: bool = False  # the store's part ETags are the MD5 of their bytes (seen so)


class _LedgerFile(msgspec.Struct):
    format: str
    version: int
    target: str
    entries: dict[str, LedgerEntry]
    open_uploads: dict[str, str] = {}  # multipart upload id -> object key


class OpenUpload(NamedTuple):
    """A multipart upload sessiond began and has not completed or aborted yet."""

    upload_id: str
    key: str


_DECODER = msgspec.json.Decoder(_LedgerFile)
_ENCODER = msgspec.json.Encoder()


class Ledger:
    """Thread-safe map session id -> LedgerEntry, persisted to `<state_dir>/uploads.ledger`.

    `target` names the destination (endpoint, bucket, prefix): a ledger written for another
    destination says nothing about this one, so it is treated as foreign.
    """

    def __init__(self, state_dir: str, target: str, name: str = LEDGER_NAME) -> None:
        self.path = os.path.join(state_dir, name)
        self._target = target
        self._entries: dict[str, LedgerEntry] = {}
        self._open: dict[str, str] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._dirty = False
        self._closed = False

    def load(self) -> None:
        """Read the file; start empty (and log why) when it is missing, corrupt or foreign."""
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return
        except OSError as exc:
            self._rebuild(f"unreadable: {exc.strerror or type(exc).__name__}")
            return
        try:
            doc = _DECODER.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self._rebuild("corrupt")
            return
        if doc.format != _FORMAT or doc.version != _VERSION:
            self._rebuild("foreign format")
        elif doc.target != self._target:
            self._rebuild("written for another endpoint, bucket or prefix")
        else:
            with self._lock:
                self._entries = dict(doc.entries)
                self._open = dict(doc.open_uploads)

    def _rebuild(self, reason: str) -> None:
        log_event("ledger_rebuilt", logging.WARNING, path=self.path, reason=reason)
        with self._lock:
            self._entries = {}
            self._dirty = True  # replace the bad file at the next persist

    # --- entries --------------------------------------------------------------------------

    def get(self, session_id: str) -> LedgerEntry | None:
        with self._lock:
            return self._entries.get(session_id)

    def record(self, session_id: str, entry: LedgerEntry) -> None:
        with self._lock:
            if self._entries.get(session_id) != entry:
                self._entries[session_id] = entry
                self._dirty = True

    def forget_if(self, session_id: str, entry: LedgerEntry) -> bool:
        """Forget the entry if it is still `entry` (no upload replaced it meanwhile)."""
        with self._lock:
            if self._entries.get(session_id) != entry:
                return False
            del self._entries[session_id]
            self._dirty = True
            return True

    def forget(self, session_ids: Iterable[str]) -> None:
        with self._lock:
            for session_id in session_ids:
                if self._entries.pop(session_id, None) is not None:
                    self._dirty = True

    def items(self) -> list[tuple[str, LedgerEntry]]:
        with self._lock:
            return list(self._entries.items())

    # --- open multipart uploads -----------------------------------------------------------

    def open_upload(self, upload_id: str, key: str) -> None:
        """Record an upload before any part is sent, on disk at once. Raises OSError."""
        with self._lock:
            self._open[upload_id] = key
            self._dirty = True
        self.persist()

    def close_upload(self, upload_id: str) -> None:
        """The upload was completed or aborted."""
        with self._lock:
            if self._open.pop(upload_id, None) is not None:
                self._dirty = True

    def open_uploads(self, key: str | None = None) -> list[OpenUpload]:
        """The uploads still open, all or those of one key."""
        with self._lock:
            return [OpenUpload(u, k) for u, k in self._open.items() if key is None or k == key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def dirty(self) -> bool:
        return self._dirty

    # --- persistence ----------------------------------------------------------------------

    def persist(self) -> bool:
        """Write the ledger if it changed; True when written. Raises OSError."""
        with self._write_lock:
            with self._lock:
                if not self._dirty or self._closed:
                    return False
                doc = _LedgerFile(
                    _FORMAT, _VERSION, self._target, dict(self._entries), dict(self._open)
                )
                self._dirty = False
            try:
                write_state_file(self.path, _ENCODER.encode(doc))
            except OSError:
                self._dirty = True
                raise
            return True

    def close(self) -> None:
        """Write what is left; later records stay in memory only (a new sink owns the file)."""
        try:
            self.persist()
        finally:
            with self._lock:
                self._closed = True
