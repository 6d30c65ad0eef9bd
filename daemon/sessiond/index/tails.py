"""Warm tails: windowed sessions, read and cut once per file version, then served from memory.

A resume with a window re-reads nothing while the file is unchanged: the encoded `session`
object is kept in an LRU bounded by bytes (default 64 MiB). A save changes the file version, so
a stale tail is never served; it just ages out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import msgspec
from sessionctl.agent import MAX_SESSION_FILE_BYTES
from sessionctl.document import InvalidSession
from sessionctl.regular import read_regular

from sessiond.index.database_records import StoredRecord
from sessiond.index.decode import decode_session, windowed_session
from sessiond.index.records import FileVersion, SessionRecord
from sessiond.store.export import StoredUnavailable, stored_tail

DEFAULT_BUDGET_BYTES = 64 * 1024 * 1024
_encoder = msgspec.json.Encoder()


class TailUnavailable(Exception):
    """The file could not be read or is no longer a valid session."""


@dataclass(frozen=True, slots=True)
class Tail:
    record: SessionRecord  # the header of the version the tail was cut from
    session: msgspec.Raw  # the encoded windowed session object
    dropped: int

    @property
    def cost(self) -> int:
        return len(self.session) + 512


class TailCache:
    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self._budget = budget_bytes
        self._used = 0
        self._entries: OrderedDict[tuple[str, FileVersion, int], Tail] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, record: SessionRecord, window: int) -> Tail:
        """The tail of `record`'s file as it is now (which may be newer than `record`)."""
        key = (record.path, record.version, window)
        with self._lock:
            tail = self._entries.get(key)
            if tail is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return tail
            self.misses += 1
        tail = _cut(record, window)
        self._store((record.path, tail.record.version, window), tail)
        return tail

    def _store(self, key: tuple[str, FileVersion, int], tail: Tail) -> None:
        if tail.cost > self._budget // 4:
            return  # one huge tail would evict everything else
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._used -= old.cost
            self._entries[key] = tail
            self._used += tail.cost
            while self._used > self._budget and self._entries:
                _, evicted = self._entries.popitem(last=False)
                self._used -= evicted.cost

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._entries), "bytes": self._used, "hits": self.hits,
                    "misses": self.misses}  # fmt: skip


def _cut(record: SessionRecord, window: int) -> Tail:
    if isinstance(record, StoredRecord):  # a row of the agent's database
        try:
            stored = stored_tail(record, window)
        except StoredUnavailable as exc:
            raise TailUnavailable(str(exc)) from None
        return Tail(stored.record, stored.session, stored.dropped)
    try:
        st, data = read_regular(record.path, MAX_SESSION_FILE_BYTES)
        version = FileVersion.of(st)
        decoded = decode_session(data)
    except (OSError, InvalidSession, MemoryError) as exc:
        raise TailUnavailable(f"session {record.session_id} could not be read: {exc}") from None
    fresh = SessionRecord.from_decoded(record.path, version, decoded)
    session, dropped = windowed_session(decoded, window)
    encoded = _encoder.encode(session)
    if b"\n" in encoded:
        # Raw slices of a pretty-printed file (a Codex import) carry its line breaks, which
        # would cut the response line in two: reformat compactly (values are kept verbatim).
        encoded = msgspec.json.format(encoded, indent=0)
    return Tail(fresh, msgspec.Raw(encoded), dropped)
