"""Decoding session files with msgspec: validity, header fields, and windowed sessions.

One pass over the bytes yields everything: typed header fields, and each message and tool use
as a `msgspec.Raw` slice of the file, so a window is cut and re-emitted without building the
messages. The validity rules mirror sessionctl.document.validate_document (the client's
standard-library decoder); tests/unit/index/test_document_rules.py holds the two to the same cases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType
from sessionctl.agent import (
    DEFAULT_SUMMARY_INDEX,
    MAX_SESSION_FILE_BYTES,
    METADATA_FIELDS,
    SESSION_FIELDS,
    cut_tail,
    parse_rfc3339_ns,
)
from sessionctl.document import InvalidSession, message_page

SLICES_BUDGET_BYTES = 64 << 20
"""A header is decoded with one slice per array element (fast) while that costs at most this
much or four times the file (~56 bytes a slice, counted from the file's commas, an upper
bound on its elements); beyond, the elements are counted by `count_elements`, slower but in
about one more copy of the file. So a header never costs more than ~5 times its file."""
_SLICE_COST = 56


class _Metadata(msgspec.Struct, kw_only=True):
    directory: str | None = None
    model: str | None = None
    knowledge_snapshot: str | None = None
    shared: bool
    share_url: str | None = None


# Absent and null are told apart (UNSET): the fields' written lengths must add up (see
# `_repeated_fields`), and `"title":null` takes bytes where an absent title takes none.
class _SessionFile(msgspec.Struct, kw_only=True):
    id: str
    title: str | UnsetType | None = UNSET
    created_at: str
    updated_at: str
    metadata: msgspec.Raw
    agent: str
    messages: list[msgspec.Raw]
    pages: list[msgspec.Raw] | UnsetType | None = UNSET
    summary_index: msgspec.Raw = msgspec.Raw(b"")  # empty when absent: Raw cannot be Optional
    tool_uses: list[msgspec.Raw]
    usage: msgspec.Raw


class _SessionHeaderFile(msgspec.Struct, kw_only=True):
    """The same fields for the index, with the arrays as one raw slice each: a header needs
    their lengths only, and a list of slices costs ~56 bytes an element, 20 times the file
    for millions of tiny messages (`count_elements` counts them in a few copies of the bytes)."""

    id: str
    title: str | UnsetType | None = UNSET
    created_at: str
    updated_at: str
    metadata: msgspec.Raw
    agent: str
    messages: msgspec.Raw
    pages: msgspec.Raw = msgspec.Raw(b"")
    summary_index: msgspec.Raw = msgspec.Raw(b"")
    tool_uses: msgspec.Raw
    usage: msgspec.Raw


# Tokens of a JSON array for counting its elements: a whole string; a run of characters and
# flat containers holding no string and no comma (`{}`, `[1]`), whose commas are all at the
# run's own depth; or one bracket.
_TOKEN = re.compile(
    rb'"[^"\\]*(?:\\.[^"\\]*)*+"'
    rb'|((?:[^"\[\]{}]++|\{[^"\[\]{},]*+\}|\[[^"\[\]{},]*+\])++)'  # possessive: no backtracking
    rb"|([\[{])|[\]}]",
    re.DOTALL,
)
_EMPTY_ARRAY = re.compile(rb"\[\s*\]\Z")


def count_elements(array: bytes | memoryview) -> int:
    """The number of elements of a JSON array given as valid JSON bytes, counting the commas
    at its top level token by token: no object is kept per element, so millions of tiny
    elements cost time, not memory."""
    data = bytes(array) if isinstance(array, memoryview) else array
    if data[:1] != b"[":  # a raw slice starts at its value: no blank before it
        raise InvalidSession("expected an array")
    if _EMPTY_ARRAY.match(data):
        return 0
    depth = 0
    commas = 0
    for match in _TOKEN.finditer(data):
        kind = match.lastindex  # 1: a run, 2: an opening bracket, None: a string or a closing one
        if kind == 2:
            depth += 1
        elif kind == 1:
            if depth == 1:  # the run's commas are the array's own
                commas += data.count(b",", match.start(), match.end())
        elif data[match.start()] != 0x22:
            depth -= 1
    return commas + 1


class _Part(msgspec.Struct):
    type: Any = None


class _MessageShape(msgspec.Struct):
    role: Any = None
    content: list[_Part] | None = None


_file_decoder = msgspec.json.Decoder(_SessionFile)
_header_decoder = msgspec.json.Decoder(_SessionHeaderFile)
_metadata_decoder = msgspec.json.Decoder(_Metadata)
_shape_decoder = msgspec.json.Decoder(_MessageShape)


@dataclass(slots=True)
class DecodedSession:
    """A valid session file, its metadata decoded and its arrays as raw slices."""

    doc: _SessionFile | _SessionHeaderFile
    meta: _Metadata
    updated_ns: int
    message_count: int
    tool_use_count: int

    @property
    def session_id(self) -> str:
        return self.doc.id

    @property
    def title(self) -> str | None:
        title = self.doc.title
        return None if title is UNSET else title


def decode_session(data: bytes | memoryview, header_only: bool = False) -> DecodedSession:
    """Decode and validate a session file's bytes, or raise InvalidSession saying why.
    `header_only`: what the index keeps, in memory bounded by a few times the file's size;
    otherwise the arrays too, as slices, for a window to be cut."""
    if len(data) > MAX_SESSION_FILE_BYTES:
        raise InvalidSession("larger than the agent's 512 MiB load limit")
    doc: _SessionFile | _SessionHeaderFile
    try:
        if header_only and _slices_would_cost(data) > max(SLICES_BUDGET_BYTES, 4 * len(data)):
            doc = _header_decoder.decode(data)
            counts = _array_lengths(doc)
        else:
            doc = _file_decoder.decode(data)
            counts = len(doc.messages), len(doc.tool_uses)
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
    _refuse_repeated_fields(data, doc)
    return DecodedSession(doc, meta, updated_ns, *counts)


# --- fields given twice ---------------------------------------------------------------------

_KEY_PREFIX_BYTES = 3  # the quotes and the colon around a key, as written compactly
_encode = msgspec.json.encode
_raw_pairs = msgspec.json.Decoder(dict[str, msgspec.Raw])


def _refuse_repeated_fields(
    data: bytes | memoryview, doc: _SessionFile | _SessionHeaderFile
) -> None:
    """serde's derive refuses a field of `Session` or `SessionMetadata` given twice; msgspec
    keeps the last. The usual file is compact with nothing but those fields, so its bytes are
    exactly the fields' written lengths added up: checked in a few additions. Only a file that
    is not (pretty-printed, other keys, other escapes) has its keys listed, token by token."""
    if _compact_length(doc) != len(data):
        _refuse_repeated(_object_keys(bytes(data)), SESSION_FIELDS, "")
    metadata = bytes(doc.metadata)
    pairs = _raw_pairs.decode(metadata)
    written = sum(len(_encode(k)) + 1 + len(v) for k, v in pairs.items())
    if 2 + written + max(len(pairs) - 1, 0) != len(metadata):
        _refuse_repeated(_object_keys(metadata), METADATA_FIELDS, " in metadata")


def _refuse_repeated(keys: list[str], fields: frozenset[str], where: str) -> None:
    seen: set[str] = set()
    for key in keys:
        if key in seen and key in fields:
            raise InvalidSession(f"duplicate field `{key}`{where}")
        seen.add(key)


def _compact_length(doc: _SessionFile | _SessionHeaderFile) -> int:
    total = count = 0
    for name in doc.__struct_fields__:
        value = getattr(doc, name)
        if value is UNSET or (isinstance(value, msgspec.Raw) and not len(value)):
            continue
        total += len(name) + _KEY_PREFIX_BYTES + _written_length(value)
        count += 1
    return 2 + total + max(count - 1, 0)


def _written_length(value: object) -> int:
    if isinstance(value, msgspec.Raw):
        return len(value)
    if isinstance(value, list):  # of raw slices: brackets, elements, commas
        return 2 + sum(map(len, value)) + max(len(value) - 1, 0)
    return len(_encode(value))  # a string or null as msgspec writes it (serde's way)


def _object_keys(data: bytes) -> list[str]:
    """The keys of the JSON object `data` at its top level, in order (repeats included)."""
    keys: list[str] = []
    depth = 0
    string: tuple[int, int] | None = None  # the last string token at depth 1
    for match in _TOKEN.finditer(data):
        kind = match.lastindex
        if kind == 2:
            depth += 1
        elif kind == 1:
            if (
                depth == 1
                and string is not None
                and data[match.start() : match.end()].lstrip()[:1] == b":"
            ):
                keys.append(msgspec.json.decode(data[string[0] : string[1]]))
        elif data[match.start()] == 0x22:
            if depth == 1:
                string = (match.start(), match.end())
                continue
        else:
            depth -= 1
        string = None
    return keys


def _slices_would_cost(data: bytes | memoryview) -> int:
    commas = data.count(b",") if isinstance(data, bytes) else bytes(data).count(b",")
    return (commas + 1) * _SLICE_COST


def _array_lengths(doc: _SessionHeaderFile) -> tuple[int, int]:
    """The lengths of `messages` and `tool_uses`, checked as `_SessionFile` checks them (arrays;
    `pages` an array or null)."""
    pages = memoryview(doc.pages)[:1].tobytes()
    if pages not in (b"", b"[", b"n"):
        raise InvalidSession("pages must be an array or null")
    try:
        return count_elements(bytes(doc.messages)), count_elements(bytes(doc.tool_uses))
    except InvalidSession as exc:
        raise InvalidSession(f"messages and tool_uses: {exc}") from None


def _page_of(raw: msgspec.Raw) -> str:
    try:
        shape = _shape_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return message_page(msgspec.json.decode(raw))
    return message_page(
        {"role": shape.role, "content": [{"type": p.type} for p in shape.content or ()]}
    )


def windowed_session(decoded: DecodedSession, window: int) -> tuple[dict[str, Any], int]:
    """The session object `load_tail(window)` yields (docs/agent-files.md, "Tail load"), built
    from raw slices, and its `dropped` count. Encoding it with msgspec copies the kept slices
    verbatim."""
    doc = decoded.doc
    assert isinstance(doc, _SessionFile), "a window is cut from a file decoded whole"
    messages, dropped_messages = cut_tail(doc.messages, window)
    tool_uses, dropped_tool_uses = cut_tail(doc.tool_uses, window)
    pages: list[Any]
    if isinstance(doc.pages, list) and len(doc.pages) == len(messages):
        pages = doc.pages
    else:
        pages = [_page_of(m) for m in messages]
    session = {
        "id": doc.id,
        "title": decoded.title,
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
