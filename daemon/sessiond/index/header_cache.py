"""The persisted header cache: so a restart with unchanged files costs a stat per file, not a
decode. msgpack through msgspec, written atomically; a corrupt or foreign file is ignored (the
index is then rebuilt from the files) and replaced at the next save."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable
from typing import Annotated

import msgspec

from sessiond.index.records import SessionRecord
from sessiond.index.store import SessionIndex
from sessiond.logs import log_event
from sessiond.statefile import write_state_file

CACHE_NAME = "headers.msgpack"
FORMAT = "sessiond-header-cache"
FORMAT_VERSION = 4


Index = Annotated[int, msgspec.Meta(ge=0)]  # into the file's tables


class _Entry(msgspec.Struct, array_like=True, gc=False):
    """A record as stored: the strings many records share are indexes into the file's tables,
    so they are stored and decoded once."""

    root: Index
    stem: str | None
    session_id: str
    title: str | None
    created_at: str
    updated_at: str
    directory: Index
    agent: Index
    model: Index
    workspaces: Index
    dev: int  # (dev << 64 | ino) would not fit msgpack's 64-bit integers
    ino: int
    size: int
    mtime_ns: int
    updated_ns: int
    message_count: int
    tool_use_count: int


class _CacheFile(msgspec.Struct):
    format: str
    version: int
    strings: list[str | None]
    workspaces: list[tuple[str, ...]]
    entries: list[_Entry]


_decoder = msgspec.msgpack.Decoder(_CacheFile)
_encoder = msgspec.msgpack.Encoder()
_INO_MASK = (1 << 64) - 1


class _Tables:
    """Numbers the shared values while the cache is written."""

    def __init__(self) -> None:
        self.strings: dict[str | None, int] = {}
        self.workspaces: dict[tuple[str, ...], int] = {}

    def string(self, text: str | None) -> int:
        return self.strings.setdefault(text, len(self.strings))

    def keys(self, keys: tuple[str, ...]) -> int:
        return self.workspaces.setdefault(keys, len(self.workspaces))

    def entry(self, r: SessionRecord) -> _Entry:
        return _Entry(self.string(r.root), r.stem, r.session_id, r.title, r.created_at,
                      r.updated_at, self.string(r.directory), self.string(r.agent),
                      self.string(r.model), self.keys(r.workspaces), r.dev_ino >> 64,
                      r.dev_ino & _INO_MASK, r.size, r.mtime_ns, r.updated_ns, r.message_count,
                      r.tool_use_count)  # fmt: skip


def _records(cache: _CacheFile) -> list[SessionRecord]:
    strings = [None if s is None else sys.intern(s) for s in cache.strings]
    keys = [tuple(sys.intern(k) for k in ks) for ks in cache.workspaces]
    records = []
    for e in cache.entries:
        root, agent = strings[e.root], strings[e.agent]
        if root is None or agent is None:
            raise ValueError("a record without its folder or agent")
        records.append(
            SessionRecord(
                root,
                e.stem,
                e.session_id,
                e.title,
                e.created_at,
                e.updated_at,
                strings[e.directory],
                agent,
                strings[e.model],
                keys[e.workspaces],
                e.dev << 64 | e.ino,
                e.size,
                e.mtime_ns,
                e.updated_ns,
                e.message_count,
                e.tool_use_count,
            )
        )
    return records


def load(state_dir: str) -> list[SessionRecord]:
    """The cached records; empty when there is no usable cache."""
    path = os.path.join(state_dir, CACHE_NAME)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        log_event("header_cache_unreadable", logging.WARNING, path=path, error=str(exc))
        return []
    try:
        cache = _decoder.decode(data)
        del data
        if cache.format != FORMAT or cache.version != FORMAT_VERSION:
            raise ValueError("foreign format")
        return _records(cache)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, IndexError) as exc:
        log_event("header_cache_rebuilt", logging.WARNING, path=path, error=str(exc)[:200])
        return []


def save(state_dir: str, records: Iterable[SessionRecord]) -> None:
    """Write the cache atomically. Raises OSError on failure."""
    tables = _Tables()
    entries = [tables.entry(r) for r in records]
    cache = _CacheFile(FORMAT, FORMAT_VERSION, list(tables.strings),
                       list(tables.workspaces), entries)  # fmt: skip
    write_state_file(os.path.join(state_dir, CACHE_NAME), _encoder.encode(cache))


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
