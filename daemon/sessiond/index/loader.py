"""Turns a session file into a SessionRecord, decoding it only when its version changed.

A file version is (device, inode, size, mtime_ns). A record already indexed, one from the
persisted cache, or a remembered "this version is garbage" all spare the read and the decode.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum

from sessiond.index.decode import InvalidSession, decode_session
from sessiond.index.records import FileVersion, SessionRecord


class Outcome(Enum):
    UNCHANGED = "unchanged"  # the indexed record is current
    CACHED = "cached"  # the persisted cache had this version
    DECODED = "decoded"  # read and decoded now
    INVALID = "invalid"  # not a session the agent could load
    STILL_INVALID = "still_invalid"  # the same version that was found invalid before
    MISSING = "missing"  # no such file
    UNREADABLE = "unreadable"  # exists, but cannot be read (permissions, I/O error)


@dataclass(slots=True)
class Loaded:
    outcome: Outcome
    record: SessionRecord | None = None
    error: str | None = None


class HeaderLoader:
    def __init__(self, cached: dict[str, SessionRecord] | None = None) -> None:
        self._cached = cached or {}
        self._invalid: dict[str, FileVersion] = {}

    def cached_roots(self) -> set[str]:
        """The folders the persisted cache has sessions in (those the last run served)."""
        return {record.root for record in self._cached.values()}

    def forget_cache(self) -> None:
        """Drop the persisted cache's records once the initial build has used them."""
        self._cached = {}

    def load(self, path: str, root: str, known: SessionRecord | None) -> Loaded:
        try:
            version = FileVersion.of(os.stat(path))
        except FileNotFoundError:
            self._invalid.pop(path, None)
            return Loaded(Outcome.MISSING)
        except OSError as exc:
            return Loaded(Outcome.UNREADABLE, error=exc.strerror or str(exc))
        if known is not None and known.version == version:
            return Loaded(Outcome.UNCHANGED, known)
        cached = self._cached.pop(path, None)
        if cached is not None and cached.version == version and cached.root == root:
            return Loaded(Outcome.CACHED, cached)
        if self._invalid.get(path) == version:
            return Loaded(Outcome.STILL_INVALID)
        return self._decode(path, root)

    def _decode(self, path: str, root: str) -> Loaded:
        try:
            with open(path, "rb") as fh:
                # The version of the bytes actually read, even if the file was just replaced.
                version = FileVersion.of(os.fstat(fh.fileno()))
                data = fh.read()
        except FileNotFoundError:
            self._invalid.pop(path, None)
            return Loaded(Outcome.MISSING)
        except OSError as exc:
            return Loaded(Outcome.UNREADABLE, error=exc.strerror or str(exc))
        try:
            decoded = decode_session(data)
        except InvalidSession as exc:
            self._invalid[path] = version
            return Loaded(Outcome.INVALID, error=str(exc)[:200])
        self._invalid.pop(path, None)
        return Loaded(Outcome.DECODED, SessionRecord.from_decoded(path, root, version, decoded))
