"""Decoding session files with msgspec: validity, header fields, and windowed sessions.

One pass over the bytes yields everything: typed header fields, and each message and tool use
as a `msgspec.Raw` slice of the file, so a window is cut and re-emitted without building the
messages. The validity rules mirror sessionctl.document.validate_document (the client's
standard-library decoder); tests/test_document_rules.py holds the two to the same cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from sessionctl.agent import DEFAULT_SUMMARY_INDEX, cut_tail, parse_rfc3339_ns
from sessionctl.document import message_page

MAX_SESSION_FILE_BYTES = 512 * 1024 * 1024
"""The agent refuses to load larger files (`MAX_SESSION_FILE_BYTES`), so they are no sessions."""


class InvalidSession(ValueError):
    """The bytes are not a session the agent could load."""


class _Metadata(msgspec.Struct, kw_only=True):
    directory: str | None = None
    model: str | None = None
    knowledge_snapshot: str | None = None
    shared: bool
    share_url: str | None = None


class _SessionFile(msgspec.Struct, kw_only=True):
    id: str
    title: str | None = None
    created_at: str
    updated_at: str
    metadata: msgspec.Raw
    agent: str
    messages: list[msgspec.Raw]
    pages: list[msgspec.Raw] | None = None
    summary_index: msgspec.Raw = msgspec.Raw(b"")  # empty when absent: Raw cannot be Optional
    tool_uses: list[msgspec.Raw]
    usage: msgspec.Raw


class _Part(msgspec.Struct):
    type: Any = None


class _MessageShape(msgspec.Struct):
    role: Any = None
    content: list[_Part] | None = None


_file_decoder = msgspec.json.Decoder(_SessionFile)
_metadata_decoder = msgspec.json.Decoder(_Metadata)
_shape_decoder = msgspec.json.Decoder(_MessageShape)


@dataclass(slots=True)
class DecodedSession:
    """A valid session file, its metadata decoded and its arrays as raw slices."""

    doc: _SessionFile
    meta: _Metadata
    updated_ns: int

    @property
    def session_id(self) -> str:
        return self.doc.id


def decode_session(data: bytes | memoryview) -> DecodedSession:
    """Decode and validate a session file's bytes, or raise InvalidSession saying why."""
    if len(data) > MAX_SESSION_FILE_BYTES:
        raise InvalidSession("larger than the agent's 512 MiB load limit")
    try:
        doc = _file_decoder.decode(data)
        meta = _metadata_decoder.decode(doc.metadata)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidSession(str(exc)) from None
    except RecursionError:  # nested deeper than the decoder follows (serde_json stops at 128)
        raise InvalidSession("nested too deeply") from None
    if parse_rfc3339_ns(doc.created_at) is None:
        raise InvalidSession("created_at must be an RFC 3339 time")
    updated_ns = parse_rfc3339_ns(doc.updated_at)
    if updated_ns is None:
        raise InvalidSession("updated_at must be an RFC 3339 time")
    if not bytes(doc.usage)[:1] == b"{":
        raise InvalidSession("usage must be an object")
    return DecodedSession(doc=doc, meta=meta, updated_ns=updated_ns)


def _page_of(raw: msgspec.Raw) -> str:
    try:
        shape = _shape_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return message_page(msgspec.json.decode(raw))
    return message_page(
        {"role": shape.role, "content": [{"type": p.type} for p in shape.content or ()]}
    )


def windowed_session(decoded: DecodedSession, window: int) -> tuple[dict[str, Any], int]:
    """The session object `load_tail(window)` yields (format §4), built from raw slices, and
    its `dropped` count. Encoding it with msgspec copies the kept slices verbatim."""
    doc = decoded.doc
    messages, dropped_messages = cut_tail(doc.messages, window)
    tool_uses, dropped_tool_uses = cut_tail(doc.tool_uses, window)
    pages: list[Any]
    if doc.pages is not None and len(doc.pages) == len(messages):
        pages = doc.pages
    else:
        pages = [_page_of(m) for m in messages]
    session = {
        "id": doc.id,
        "title": doc.title,
        "created_at": doc.created_at,
        "updated_at": doc.updated_at,
        "metadata": doc.metadata,
        "agent": doc.agent,
        "messages": messages,
        "pages": pages,
        "summary_index": doc.summary_index if len(doc.summary_index) else DEFAULT_SUMMARY_INDEX,
        "tool_uses": tool_uses,
        "usage": doc.usage,
    }
    return session, dropped_messages + dropped_tool_uses
