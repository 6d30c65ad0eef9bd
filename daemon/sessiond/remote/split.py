"""A session file cut into the parts kept in the bucket, and spliced back (docs/remote.md).

The three arrays (`messages`, `pages`, `tool_uses`) become one element a line: `messages` is the
agent's history object, the others sessiond's own. Everything else (every other top-level field,
raw, and the order of the keys) is the head. For a compact file each element and field is a raw
slice of the file (msgspec.Raw), never re-encoded, so splicing gives the file back byte for byte;
the head says whether it does (`exact`, checked when cutting). A pretty file's elements are
re-encoded compact, as the history's are, so its splice is equal as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from sessiond.sink.history import agent_encode

ARRAYS = ("messages", "pages", "tool_uses")
HEAD_FORMAT = "sessiond-session-head"
_PRETTY_MARKS = (b"\n", b"\r", b"\t")


class SplitError(ValueError):
    """The bytes are not a session document that can be cut (torn, not an object)."""


class Head(msgspec.Struct):
    format: str
    version: int
    keys: list[str]  # the top-level keys in the file's order
    fields: dict[str, msgspec.Raw]  # each top-level value but the arrays, as in the file
    exact: bool  # splicing the parts gives the file back byte for byte


@dataclass(frozen=True)
class Parts:
    head: bytes
    pages: bytes | None  # None when the file has no `pages` array
    tool_uses: bytes | None
    exact: bool


_TOP = msgspec.json.Decoder(dict[str, msgspec.Raw])
_HEAD = msgspec.json.Decoder(Head)
_ENCODER = msgspec.json.Encoder()


def cut(data: bytes, history: bytes) -> Parts:
    """The parts of the session file `data`, whose history object is `history`."""
    try:
        top = _TOP.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SplitError(f"not a whole session document: {exc}") from None
    pretty = any(mark in data for mark in _PRETTY_MARKS)
    arrays: dict[str, bytes] = {}
    fields: dict[str, msgspec.Raw] = {}
    for key, raw in top.items():
        if key in ARRAYS and memoryview(raw)[:1].tobytes() == b"[":
            if key != "messages":
                arrays[key] = _lines(raw, pretty)
        else:
            fields[key] = raw
    if "messages" in fields:
        raise SplitError("messages is not an array")
    keys = list(top)
    head = Head(HEAD_FORMAT, 1, keys, fields, exact=False)
    pages, tool_uses = arrays.get("pages"), arrays.get("tool_uses")
    head.exact = splice(head, history, pages, tool_uses) == data
    return Parts(_ENCODER.encode(head), pages, tool_uses, head.exact)


def _lines(raw: msgspec.Raw, pretty: bool) -> bytes:
    elements = msgspec.json.decode(raw, type=list[msgspec.Raw])
    out: list[bytes | memoryview] = []
    for element in elements:
        view = memoryview(element)
        out.append(agent_encode(msgspec.json.decode(view)) if pretty else view)
        out.append(b"\n")
    return b"".join(out)


def read_head(data: bytes) -> Head:
    try:
        head = _HEAD.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SplitError(f"not a session head: {exc}") from None
    if head.format != HEAD_FORMAT or head.version != 1:
        raise SplitError(f"a head of another format ({head.format} {head.version})")
    return head


def splice(
    head: Head,
    history: bytes,
    pages: bytes | None,
    tool_uses: bytes | None,
    directory: str | None = None,
) -> bytes:
    """The session document from its parts; with `directory`, `metadata.directory` set to it
    (the rest of `metadata` kept as its raw slices)."""
    arrays = {"messages": history, "pages": pages, "tool_uses": tool_uses}
    out: list[bytes | memoryview] = [b"{"]
    for number, key in enumerate(head.keys):
        if number:
            out.append(b",")
        out += [agent_encode(key), b":"]
        if key in head.fields:
            value = bytes(head.fields[key])
            if key == "metadata" and directory is not None:
                value = with_directory(value, directory)
            out.append(value)
            continue
        body = arrays.get(key)
        if body is None:
            raise SplitError(f"the part that holds {key} is missing")
        out += [b"[", b",".join(_split_lines(body)), b"]"]
    out.append(b"}")
    return b"".join(out)


def _split_lines(body: bytes) -> list[bytes]:
    if not body:
        return []
    if not body.endswith(b"\n"):
        raise SplitError("a part does not end with a newline")
    return body[:-1].split(b"\n")


def with_directory(metadata: bytes, directory: str) -> bytes:
    """`metadata` with its `directory` replaced (or added first), other values untouched."""
    try:
        fields = _TOP.decode(metadata)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SplitError(f"metadata is not an object: {exc}") from None
    value = agent_encode(directory)
    items: list[tuple[str, bytes]] = [] if "directory" in fields else [("directory", value)]
    items += [(k, value if k == "directory" else bytes(v)) for k, v in fields.items()]
    return b"{" + b",".join(agent_encode(k) + b":" + v for k, v in items) + b"}"
