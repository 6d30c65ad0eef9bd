"""A session file's history object: what the agent would upload, byte for byte.

The agent uploads `serde_json::to_string(msg) + "\\n"` for each message, and those lines are
exactly the elements of `messages` in the compact file it saves (docs/agent-files.md, "The
history object"). So for the agent's own files we slice each element's bytes out of the file
(`msgspec.Raw`) and never re-encode. A Codex import is pretty-printed in place; its messages
are re-encoded with the agent's rules (compact, raw UTF-8, `/` unescaped), which `json.dumps`
below reproduces.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec
from sessionctl.agent import MAX_SESSION_FILE_BYTES
from sessionctl.regular import read_regular

from sessiond.index.records import FileVersion
from sessiond.store.export import StoredUnavailable, stored_document, stored_revision

# serde_json writes every message starting with its first field, the role, as a string.
_COMPACT_START = b'{"role":"'
# Whitespace that compact serde_json never writes outside strings, and escapes inside them.
_PRETTY_MARKS = (b"\n", b"\r", b"\t")


class _Document(msgspec.Struct):
    """The two fields the history needs; the rest of the file is checked for syntax only."""

    id: str
    messages: list[msgspec.Raw]


_DECODER = msgspec.json.Decoder(_Document)


class UnreadableSession(Exception):
    """The file is not a whole session (torn, truncated, garbage): never upload it."""


@dataclass
class History:
    body: bytes
    stat: FileVersion  # of the file it was read from, or its database row's (row_version)
    messages: int
    reencoded: bool
    document: bytes = field(default=b"", repr=False, compare=False)  # the file's bytes
    path: str = ""
    _fingerprint: str | None = field(default=None, repr=False, compare=False)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.body)
        return self._fingerprint

    def starts_with(self, size: int, prefix_fingerprint: str) -> bool:
        """Whether the first `size` bytes have `prefix_fingerprint`: the body extends what was
        uploaded. One hashing pass gives that answer and the whole body's fingerprint."""
        if size > len(self.body):
            return False
        view = memoryview(self.body)
        digest = hashlib.md5(view[:size], usedforsecurity=False)
        prefix = digest.hexdigest()
        if self._fingerprint is None:
            digest.update(view[size:])
            self._fingerprint = digest.hexdigest()
        return prefix == prefix_fingerprint


def fingerprint(body: bytes | memoryview) -> str:
    """The ledger's record of an object's content: its MD5, which is also what S3 stores report
    as the ETag of a single-part object or of one part, so a delta can check the part the store
    copied (docs/logging.md, "Delta uploads")."""
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def row_version(revision: int) -> FileVersion:
    """No file version identifies a database row: its revision stands in for one."""
    return FileVersion(dev=0, ino=0, size=revision, mtime_ns=0)


def stat_file(path: str) -> FileVersion | None:
    """The version of the session at `path`: its file's, or its database row's revision."""
    revision = stored_revision(path)
    if revision is not None:
        return row_version(revision)
    try:
        return FileVersion.of(os.stat(path))
    except OSError:
        return None


def read_history(path: str) -> History:
    """Read the session file at `path` and build its history object.

    Raises UnreadableSession when the file does not decode, OSError when it cannot be read.
    A session of the agent's database is read from its row (docs/storage.md).
    """
    try:
        stored = stored_document(path)
    except StoredUnavailable as exc:
        raise UnreadableSession(str(exc)) from None
    if stored is not None:
        body, revision, count, document = stored
        return History(
            body=body,
            stat=row_version(revision),
            messages=count,
            reencoded=False,
            document=document,
            path=path,
        )
    st, data = read_regular(path, MAX_SESSION_FILE_BYTES)  # never a FIFO, a device, a huge file
    stat = FileVersion.of(st)
    body, reencoded, count = history_body(data)
    return History(
        body=body, stat=stat, messages=count, reencoded=reencoded, document=data, path=path
    )


class HistoryBody(NamedTuple):
    body: bytes
    reencoded: bool  # some messages were re-encoded with the agent's rules
    messages: int


def history_body(data: bytes) -> HistoryBody:
    """The history object's bytes for the session document `data`."""
    try:
        doc = _DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UnreadableSession(f"not a whole session document: {exc}") from None
    pretty = any(mark in data for mark in _PRETTY_MARKS)
    pieces: list[bytes | memoryview] = []
    reencoded = False
    for number, raw in enumerate(doc.messages):
        view = memoryview(raw)
        if view[:1].tobytes() != b"{":
            raise UnreadableSession(f"message {number} is not a JSON object")
        if pretty or view[: len(_COMPACT_START)] != _COMPACT_START:
            pieces.append(agent_encode(msgspec.json.decode(view)))
            reencoded = True
        else:
            pieces.append(view)  # the agent's own bytes; b"".join copies them once
        pieces.append(b"\n")
    return HistoryBody(b"".join(pieces), reencoded, len(doc.messages))


def agent_encode(value: object) -> bytes:
    """serde_json's compact form (docs/agent-files.md, "Encoding"): no spaces, raw UTF-8, `/` as
    is."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: the agent cannot load such a file either
        raise UnreadableSession("a string holds a lone surrogate") from None
