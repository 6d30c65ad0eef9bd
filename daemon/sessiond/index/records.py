"""One indexed session file: the header fields the protocol serves, and what identifies the
file version they were read from."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
from sessionctl.agent import canonicalize, normalize_components
from sessionctl.document import make_header

from sessiond.index.decode import DecodedSession


class FileVersion(NamedTuple):
    """A file version: the header cache is keyed by it, so a file is decoded once per version."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileVersion:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def workspace_keys(directory: str | None) -> tuple[str, ...]:
    """The spellings under which a session answers a workspace query: its directory as written
    and once canonicalized (the agent accepts either, compared with the canonical workspace)."""
    if directory is None:
        return ()
    written = normalize_components(directory)
    canonical = canonicalize(directory)
    return (written,) if written == canonical else (written, canonical)


@dataclass(slots=True, eq=False)
class SessionRecord:
    path: str
    root: str
    version: FileVersion
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
    _header_json: msgspec.Raw | None = field(default=None, repr=False)

    @classmethod
    def from_decoded(
        cls, path: str, root: str, version: FileVersion, decoded: DecodedSession
    ) -> SessionRecord:
        doc, meta = decoded.doc, decoded.meta
        return cls(
            path=path,
            root=root,
            version=version,
            session_id=doc.id,
            title=doc.title,
            created_at=doc.created_at,
            updated_at=doc.updated_at,
            updated_ns=decoded.updated_ns,
            directory=meta.directory,
            agent=doc.agent,
            model=meta.model,
            message_count=len(doc.messages),
            tool_use_count=len(doc.tool_uses),
            workspaces=workspace_keys(meta.directory),
        )

    @property
    def file_name(self) -> str:
        return os.path.basename(self.path)

    @property
    def mtime_ns(self) -> int:
        return self.version.mtime_ns

    @property
    def resume_key(self) -> tuple[int, str, str]:
        """The agent's scan order: newest mtime first, ties to the greater file name."""
        return (self.version.mtime_ns, self.file_name, self.path)

    @property
    def list_key(self) -> tuple[int, int, str]:
        """Listing order: newest `updated_at` as an instant, then newest file."""
        return (self.updated_ns, self.version.mtime_ns, self.path)

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
            file_bytes=self.version.size,
            mtime_ns=self.version.mtime_ns,
        )

    def header_json(self) -> msgspec.Raw:
        """The header encoded once per record, so hot reads copy bytes instead of encoding."""
        if self._header_json is None:
            self._header_json = msgspec.Raw(msgspec.json.encode(self.header()))
        return self._header_json
