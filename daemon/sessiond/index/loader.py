"""Turns a session file into a SessionRecord, decoding it only when its version changed.

A file version is (device, inode, size, mtime_ns). A record already indexed, one from the
persisted cache, or a remembered "this version is garbage" all spare the read and the decode.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from sessionctl.agent import MAX_SESSION_FILE_BYTES
from sessionctl.document import InvalidSession
from sessionctl.regular import FileTooLarge, NotRegularFile, is_transient, read_regular
from sessionctl.store import is_locator

from sessiond.index.decode import decode_session
from sessiond.index.records import FileVersion, SessionRecord, split_session_path


class Outcome(Enum):
    UNCHANGED = "unchanged"  # the indexed record is current
    CACHED = "cached"  # the persisted cache had this version
    DECODED = "decoded"  # read and decoded now
    INVALID = "invalid"  # not a session the agent could load
    STILL_INVALID = "still_invalid"  # the same version that was found invalid before
    MISSING = "missing"  # no such file
    UNREADABLE = "unreadable"  # exists, but cannot be read (permissions, I/O error)
    RETRY = "retry"  # the daemon is out of descriptors or memory: says nothing about the file
    LOCATOR = "locator"  # the agent database's marker: the session is a row (docs/storage.md)


@dataclass(slots=True)
class Loaded:
    outcome: Outcome
    record: SessionRecord | None = None
    error: str | None = None
    version: FileVersion | None = None  # of an invalid file: it is not decoded again


def read_and_decode(path: str) -> Loaded:
    """Read and decode one file. Pure apart from the read, so it can run in a worker process."""
    try:
        # The version of the bytes actually read, even if the file was just replaced.
        st, data = read_regular(path, MAX_SESSION_FILE_BYTES)
    except FileNotFoundError:
        return Loaded(Outcome.MISSING)
    except (NotRegularFile, FileTooLarge) as exc:
        # No session the agent could load; remembered by the version of what was opened.
        return Loaded(Outcome.INVALID, error=exc.strerror, version=FileVersion.of(exc.st))
    except OSError as exc:
        if is_transient(exc):
            return Loaded(Outcome.RETRY, error=exc.strerror or str(exc))
        return Loaded(Outcome.UNREADABLE, error=exc.strerror or str(exc))
    except MemoryError:
        return Loaded(Outcome.RETRY, error="out of memory")
    version = FileVersion.of(st)
    if is_locator(data):
        return Loaded(Outcome.LOCATOR, version=version)
    try:
        decoded = decode_session(data, header_only=True)
        return Loaded(Outcome.DECODED, SessionRecord.from_decoded(path, version, decoded))
    except InvalidSession as exc:
        return Loaded(Outcome.INVALID, error=str(exc)[:200], version=version)
    except MemoryError:
        return Loaded(Outcome.RETRY, error="out of memory")
    except Exception as exc:  # one file a rule here did not foresee must not stop a crawl
        return Loaded(Outcome.INVALID, error=f"cannot be indexed: {exc!r}"[:200], version=version)


class HeaderLoader:
    def __init__(self, cached: Iterable[SessionRecord] = ()) -> None:
        self._cached: dict[str, dict[str, SessionRecord]] = {}  # folder -> file stem -> record
        for record in cached:
            self._cached.setdefault(record.folder, {})[record.file_stem] = record
        self._invalid: dict[str, FileVersion] = {}

    def cached_folders(self) -> set[str]:
        """The folders the persisted cache has sessions in (those the last run served)."""
        return set(self._cached)

    def forget_cache(self) -> None:
        """Drop the persisted cache's records once the initial build has used them."""
        self._cached = {}

    def load(self, path: str, known: SessionRecord | None, reread: bool = False) -> Loaded:
        """`reread`: read the file even when its version is the indexed one. Its mode or owner
        changed, and only a read tells whether it can still be read (root or not)."""
        if not reread:
            loaded = self.without_decoding(path, known)
            return loaded if loaded is not None else self.decode_many([path])[0]
        loaded = self._remember(path, read_and_decode(path))
        if (
            known is not None
            and loaded.record is not None
            and loaded.record.version == known.version
        ):
            return Loaded(Outcome.UNCHANGED, known)
        return loaded

    def decode_many(
        self, paths: list[str], decode_all: Callable[[list[str]], list[Loaded]] | None = None
    ) -> list[Loaded]:
        """Read and decode files `without_decoding` could not settle, together: `decode_all`
        is a process pool for a crawl; without it they are decoded here."""
        decoded = decode_all(paths) if decode_all else [read_and_decode(p) for p in paths]
        return [self._remember(path, loaded) for path, loaded in zip(paths, decoded, strict=True)]

    def without_decoding(
        self, path: str, known: SessionRecord | None, stat: os.stat_result | OSError | None = None
    ) -> Loaded | None:
        """What one stat tells about the file at `path` given its indexed record: None when
        it must be read and decoded. `stat`: taken already (the file's stat or its error)."""
        try:
            if isinstance(stat, OSError):
                raise stat
            st = os.stat(path) if stat is None else stat
        except FileNotFoundError:
            self._invalid.pop(path, None)
            return Loaded(Outcome.MISSING)
        except OSError as exc:
            outcome = Outcome.RETRY if is_transient(exc) else Outcome.UNREADABLE
            return Loaded(outcome, error=exc.strerror or str(exc))
        if known is not None and known.is_version(st):
            return Loaded(Outcome.UNCHANGED, known)
        cached = self._cached_record(path)
        # A file that no one may read (mode 000 while sessiond was stopped) is read to be
        # sure: its cached header would serve a session the agent cannot load.
        readable = st.st_mode & 0o444
        if cached is not None and cached.is_version(st) and readable:
            return Loaded(Outcome.CACHED, cached)
        if self._invalid.get(path) == FileVersion.of(st):
            return Loaded(Outcome.STILL_INVALID)
        return None

    def _cached_record(self, path: str) -> SessionRecord | None:
        if not self._cached:
            return None
        folder, stem = split_session_path(path)
        return self._cached.get(folder, {}).pop(stem, None)

    def _remember(self, path: str, loaded: Loaded) -> Loaded:
        if loaded.outcome in (Outcome.INVALID, Outcome.LOCATOR) and loaded.version is not None:
            self._invalid[path] = loaded.version
        elif loaded.outcome in (Outcome.DECODED, Outcome.MISSING):
            self._invalid.pop(path, None)
        return loaded
