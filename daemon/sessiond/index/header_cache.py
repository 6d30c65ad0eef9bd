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

from sessiond import trim_memory
from sessiond.atomicwrite import write_state_file
from sessiond.index.database_records import is_stored
from sessiond.index.records import SessionRecord
from sessiond.index.store import SessionIndex
from sessiond.logs import log_event

CACHE_NAME = "headers.msgpack"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
FORMAT = "sessiond-header-cache"
FORMAT_VERSION = 6

Index = Annotated[int, msgspec.Meta(ge=0)]  # into one of the file's tables
_INO_MASK = (1 << 64) - 1


class _Columns(msgspec.Struct, gc=False):
    """The records field by field. A column is decoded in one run, so what is dropped after
    the load (the table indexes, device and inode numbers) frees whole memory pages instead
    of leaving holes between the strings that are kept: a row per record would cost the
    daemon ~40 % more resident memory after a restart. Strings many records share are stored
    once in tables and referred to by index."""

    folder: list[Index] = msgspec.field(name="root")  # the file keeps its key
    stem: list[str | None]
    session_id: list[str]
    title: list[str | None]
    created: list[str | int]
    updated: list[str | None]
    directory: list[Index]
    agent: list[Index]
    model: list[Index]
    workspaces: list[Index]
    dev: list[int]  # (dev << 64 | ino) would not fit msgpack's 64-bit integers
    ino: list[int]
    size: list[int]
    mtime_ns: list[int]
    updated_ns: list[int]
    message_count: list[int]
    tool_use_count: list[int]


class _CacheFile(msgspec.Struct):
    format: str
    version: int
    strings: list[str | None]
    workspaces: list[tuple[str, ...]]
    records: _Columns


_decoder = msgspec.msgpack.Decoder(_CacheFile)
_encoder = msgspec.msgpack.Encoder()


def _columns(
    records: list[SessionRecord],
) -> tuple[list[str | None], list[tuple[str, ...]], _Columns]:
    strings: dict[str | None, int] = {}
    keys: dict[tuple[str, ...], int] = {}

    def indexes(values: list[str | None]) -> list[int]:
        return [strings.setdefault(v, len(strings)) for v in values]

    columns = _Columns(
        folder=indexes([r.folder for r in records]),
        stem=[r.stem for r in records],
        session_id=[r.session_id for r in records],
        title=[r.title for r in records],
        created=[r.created for r in records],
        updated=[r.updated for r in records],
        directory=indexes([r.directory for r in records]),
        agent=indexes([r.agent for r in records]),
        model=indexes([r.model for r in records]),
        workspaces=[keys.setdefault(r.workspaces, len(keys)) for r in records],
        dev=[r.dev_ino >> 64 for r in records],
        ino=[r.dev_ino & _INO_MASK for r in records],
        size=[r.size for r in records],
        mtime_ns=[r.mtime_ns for r in records],
        updated_ns=[r.updated_ns for r in records],
        message_count=[r.message_count for r in records],
        tool_use_count=[r.tool_use_count for r in records],
    )
    return list(strings), list(keys), columns


def _records(cache: _CacheFile) -> list[SessionRecord]:
    c = cache.records
    if len({len(getattr(c, name)) for name in c.__struct_fields__}) > 1:
        raise ValueError("columns of different lengths")
    strings = [None if s is None else sys.intern(s) for s in cache.strings]
    keys = [tuple(sys.intern(k) for k in ks) for ks in cache.workspaces]
    folders = [strings[i] for i in c.folder]
    agents = [strings[i] for i in c.agent]
    if None in folders or None in agents:
        raise ValueError("a record without its folder or agent")
    rows = zip(folders, c.stem, c.session_id, c.title, c.created, c.updated,
               [strings[i] for i in c.directory], agents, [strings[i] for i in c.model],
               [keys[i] for i in c.workspaces],
               [dev << 64 | ino for dev, ino in zip(c.dev, c.ino, strict=True)],
               c.size, c.mtime_ns, c.updated_ns, c.message_count, c.tool_use_count,
               strict=True)  # fmt: skip
    return [SessionRecord(*row) for row in rows]


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
    # msgpack holds 64-bit integers: a time chrono accepts but no int64 of nanoseconds can
    # (the year 0) leaves its session out of the cache; it is decoded again at the next start.
    fits = [r for r in records if _INT64_MIN <= r.updated_ns <= _INT64_MAX]
    strings, keys, columns = _columns(fits)
    data = _encoder.encode(_CacheFile(FORMAT, FORMAT_VERSION, strings, keys, columns))
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
            # Database sessions are read again from their rows: only files are cached.
            save(self._state_dir, (r for r in self._index.records() if not is_stored(r)))
        except OSError as exc:
            log_event("header_cache_save_failed", logging.WARNING, error=str(exc))
            return
        except Exception as exc:  # a record it cannot encode: a bug, but the stop goes on
            log_event("header_cache_save_failed", logging.ERROR, error=repr(exc)[:200])
            return
        self._saved_seq = seq
        trim_memory.trim()  # the encoding, and the garbage of a build or rescan, are freed by now
