"""The persisted header cache: so a restart with unchanged files costs a stat per file, not a
decode. msgpack through msgspec, written atomically; a corrupt or foreign file is ignored (the
index is then rebuilt from the files) and replaced at the next save."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable

import msgspec

from sessiond.index.records import SessionRecord, shared
from sessiond.index.store import SessionIndex
from sessiond.logs import log_event
from sessiond.statefile import write_state_file

CACHE_NAME = "headers.msgpack"
FORMAT = "sessiond-header-cache"
FORMAT_VERSION = 3


class _Entry(msgspec.Struct, array_like=True):
    path: str
    root: str
    dev: int  # (dev << 64 | ino) would not fit msgpack's 64-bit integers
    ino: int
    size: int
    mtime_ns: int
    session_id: str
    title: str | None
    created_at: str
    updated_at: str
    updated_ns: int
    directory: str | None
    agent: str
    model: str | None
    message_count: int
    tool_use_count: int
    workspaces: tuple[str, ...]


class _CacheFile(msgspec.Struct):
    format: str
    version: int
    entries: list[_Entry]


_decoder = msgspec.msgpack.Decoder(_CacheFile)
_encoder = msgspec.msgpack.Encoder()


def _entry(r: SessionRecord) -> _Entry:
    dev, ino = r.dev_ino >> 64, r.dev_ino & ((1 << 64) - 1)
    return _Entry(r.path, r.root, dev, ino, r.size, r.mtime_ns, r.session_id, r.title,
                  r.created_at, r.updated_at, r.updated_ns, r.directory, r.agent, r.model,
                  r.message_count, r.tool_use_count, r.workspaces)  # fmt: skip


def _record(e: _Entry) -> SessionRecord:
    return SessionRecord(
        path=e.path,
        root=e.root,
        dev_ino=e.dev << 64 | e.ino,
        size=e.size,
        mtime_ns=e.mtime_ns,
        session_id=e.session_id,
        title=e.title,
        created_at=e.created_at,
        updated_at=e.updated_at,
        updated_ns=e.updated_ns,
        directory=shared(e.directory),
        agent=shared(e.agent) or e.agent,
        model=shared(e.model),
        message_count=e.message_count,
        tool_use_count=e.tool_use_count,
        workspaces=tuple(sys.intern(k) for k in e.workspaces),
    )


def load(state_dir: str) -> dict[str, SessionRecord]:
    """The cached records by path; empty when there is no usable cache."""
    path = os.path.join(state_dir, CACHE_NAME)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log_event("header_cache_unreadable", logging.WARNING, path=path, error=str(exc))
        return {}
    try:
        cache = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log_event("header_cache_rebuilt", logging.WARNING, path=path, error=str(exc)[:200])
        return {}
    if cache.format != FORMAT or cache.version != FORMAT_VERSION:
        log_event("header_cache_rebuilt", logging.WARNING, path=path, error="foreign format")
        return {}
    return {e.path: _record(e) for e in cache.entries}


def save(state_dir: str, records: Iterable[SessionRecord]) -> None:
    """Write the cache atomically. Raises OSError on failure."""
    data = _encoder.encode(_CacheFile(FORMAT, FORMAT_VERSION, [_entry(r) for r in records]))
    write_state_file(os.path.join(state_dir, CACHE_NAME), data)


class CacheKeeper:
    """Saves the index's records when they changed, at most once per `interval_s` unless
    forced (at stop). A failed save (read-only or full state folder) is logged and retried at
    the next opportunity; the daemon keeps serving."""

    def __init__(self, state_dir: str | None, index: SessionIndex, interval_s: float) -> None:
        self._state_dir = state_dir
        self._index = index
        self._interval = interval_s
        self._saved_seq = -1
        self._saved_at = 0.0

    def due(self, now: float) -> bool:
        return now - self._saved_at > self._interval

    def save(self, force: bool = False) -> None:
        self._saved_at = time.monotonic()
        seq = self._index.seq
        if not self._state_dir or (seq == self._saved_seq and not force):
            return
        try:
            save(self._state_dir, self._index.records())
        except OSError as exc:
            log_event("header_cache_save_failed", logging.WARNING, error=str(exc))
            return
        self._saved_seq = seq
