"""One indexed session file: the header fields the protocol serves, and what identifies the
file version they were read from."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, NamedTuple, Self

import msgspec
from sessionctl.agent import (
    canonicalize,
    format_rfc3339_ns,
    normalize_components,
    parse_rfc3339_ns,
)
from sessionctl.document import make_header

from sessiond.index.decode import DecodedSession

_INO_MASK = (1 << 64) - 1
_encoder = msgspec.json.Encoder()


class FileVersion(NamedTuple):
    """What identifies one version of a file without reading it: the header cache is keyed by
    it (a file is decoded once per version), agentfiles recognises its own writes by it, and
    the sink and the catalog compare it with what they uploaded. A database row has none: its
    revision stands in (`sink.history.row_version`)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileVersion:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def without_device(self) -> FileVersion:
        """The version as the upload ledger and the catalog keep it (inode, size, mtime): a
        device number need not survive a reboot or a restore on another machine."""
        return self._replace(dev=0)

    def same_file(self, ino: int, size: int, mtime_ns: int) -> bool:
        """Whether this is the version the ledger or the catalog recorded, device aside."""
        return (self.ino, self.size, self.mtime_ns) == (ino, size, mtime_ns)


def workspace_keys(directory: str | None) -> tuple[str, ...]:
    """The spellings under which a session answers a workspace query: its directory as written
    and once canonicalized (the agent accepts either, compared with the canonical workspace)."""
    if directory is None:
        return ()
    written = normalize_components(directory)
    canonical = canonicalize(directory)
    return (written,) if written == canonical else (written, canonical)


_keys_memo: dict[str, tuple[float, tuple[str, ...]]] = {}
_KEYS_MEMO_TTL_S = 5.0  # a crawl canonicalizes each directory once, not once per session


def shared_workspace_keys(directory: str | None) -> tuple[str, ...]:
    """workspace_keys(), memoized briefly and shared between the sessions of one directory."""
    if directory is None:
        return ()
    now = time.monotonic()
    hit = _keys_memo.get(directory)
    if hit is not None and now - hit[0] < _KEYS_MEMO_TTL_S:
        return hit[1]
    if len(_keys_memo) > 50_000:
        _keys_memo.clear()
    keys = tuple(sys.intern(k) for k in workspace_keys(directory))
    _keys_memo[directory] = (now, keys)
    return keys


def forget_workspace_keys() -> None:
    """Drop the memo: the next workspace_keys() look at the file system again (a rescan
    follows symlinks that were retargeted)."""
    _keys_memo.clear()


def shared(text: str | None) -> str | None:
    """Directories, agents and models repeat across sessions: keep one copy of each."""
    return None if text is None else sys.intern(text)


SESSION_SUFFIX = ".json"


def split_session_path(path: str) -> tuple[str, str]:
    """(folder, file stem) of a session file's path: how the index and the caches key it."""
    folder, name = os.path.split(path)
    return folder, name.removesuffix(SESSION_SUFFIX)


def _compact_time(text: str) -> str | int:
    ns = parse_rfc3339_ns(text)
    return ns if ns is not None and format_rfc3339_ns(ns) == text else text


class SessionRecord(msgspec.Struct, gc=False, eq=False):
    """One per session, so kept small: no GC header (only strings, ints and a tuple of
    strings, so no cycles), no path string (the folder is shared by its sessions and the file
    stem is usually the session id), shared strings, the device and inode packed in one int,
    and times the agent wrote in the usual form kept as numbers: the text is rebuilt exactly
    (a time written any other way is kept as written)."""

    folder: str  # the served folder the file is in (interned)
    stem: str | None  # the file name without `.json`; None when it is the session id
    session_id: str
    title: str | None
    created: str | int  # created_at, or its instant in ns when format_rfc3339_ns() gives it back
    updated: str | None  # updated_at, or None when it is format_rfc3339_ns(updated_ns)
    directory: str | None
    agent: str
    model: str | None
    workspaces: tuple[str, ...]
    dev_ino: int
    size: int
    mtime_ns: int
    updated_ns: int
    message_count: int
    tool_use_count: int

    @classmethod
    def from_decoded(cls, path: str, version: FileVersion, decoded: DecodedSession) -> Self:
        doc, meta = decoded.doc, decoded.meta
        folder, stem = split_session_path(path)
        return cls(
            folder=sys.intern(folder),
            stem=None if stem == doc.id else stem,
            session_id=doc.id,
            title=decoded.title,
            created=_compact_time(doc.created_at),
            updated=None
            if format_rfc3339_ns(decoded.updated_ns) == doc.updated_at
            else doc.updated_at,
            directory=shared(meta.directory),
            agent=shared(doc.agent) or doc.agent,
            model=shared(meta.model),
            workspaces=shared_workspace_keys(meta.directory),
            dev_ino=version.dev << 64 | version.ino,
            size=version.size,
            mtime_ns=version.mtime_ns,
            updated_ns=decoded.updated_ns,
            message_count=decoded.message_count,
            tool_use_count=decoded.tool_use_count,
        )

    @property
    def created_at(self) -> str:
        created = self.created
        return created if isinstance(created, str) else format_rfc3339_ns(created) or ""

    @property
    def updated_at(self) -> str:
        return (
            self.updated if self.updated is not None else format_rfc3339_ns(self.updated_ns) or ""
        )

    @property
    def file_stem(self) -> str:
        return self.session_id if self.stem is None else self.stem

    @property
    def file_name(self) -> str:
        return self.file_stem + SESSION_SUFFIX

    @property
    def path(self) -> str:
        return os.path.join(self.folder, self.file_name)

    @property
    def version(self) -> FileVersion:
        return FileVersion(self.dev_ino >> 64, self.dev_ino & _INO_MASK, self.size, self.mtime_ns)

    def is_version(self, st: os.stat_result) -> bool:
        """Whether `st` is the version this record was read from (no tuple built)."""
        return (
            st.st_mtime_ns == self.mtime_ns
            and st.st_size == self.size
            and st.st_ino == self.dev_ino & _INO_MASK
            and st.st_dev == self.dev_ino >> 64
        )

    @property
    def resume_key(self) -> tuple[int, str, str]:
        """The agent's scan order: newest mtime first, ties to the greater file name."""
        return (self.mtime_ns, self.file_name, self.path)

    @property
    def list_key(self) -> tuple[int, int, str]:
        """Listing order: newest `updated_at` as an instant, then newest file."""
        return (self.updated_ns, self.mtime_ns, self.path)

    def header(self) -> dict[str, Any]:
        return make_header(
            session_id=self.session_id,
            title=self.title,
            created_at=self.created_at,
            updated_at=self.updated_at,
            directory=self.directory,
            agent=self.agent,
            model=self.model,
            message_count=self.message_count,
            tool_use_count=self.tool_use_count,
            path=self.path,
            file_bytes=self.size,
            mtime_ns=self.mtime_ns,
        )

    def header_json(self) -> msgspec.Raw:
        """The header, encoded: responses embed it without another encoding pass. Kept for
        the records asked about most recently: a record is one version of a session (a file
        version, or a database row's revision), not changed once it is indexed (a save makes
        a new record), so this is never stale; it is what made a `resume` cost more than a
        `ping` (formatting its times and path, ~6 us)."""
        encoded = _headers.get(self)
        if encoded is None:
            encoded = msgspec.Raw(_encoder.encode(self.header()))
            if len(_headers) >= HEADER_MEMO_SIZE:
                _headers.pop(next(iter(_headers)), None)  # the oldest entry
            _headers[self] = encoded
        return encoded


HEADER_MEMO_SIZE = 4096
"""Encoded headers kept (~0.6 KiB each), oldest out first: a bound, whatever is asked."""
_headers: dict[SessionRecord, msgspec.Raw] = {}
"""Keyed by the record itself (eq=False: by identity), so a replaced record is never found
again; it only waits to be pushed out."""
