"""The sessiond wire protocol, sans I/O: one definition shared by the daemon, the client and tests.

The protocol is UTF-8 JSON, one object per line, over a stream socket (interface §4,
docs/protocol.md). This module only turns bytes into lines, checks decoded requests and builds
response objects. It never touches a socket or a file, and it does not pick a JSON codec: the
client uses the standard library's, the daemon msgspec. Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum

# Imported for type checkers only: `sessionctl resume` imports this module on every call, and
# typing, dataclasses (with inspect) and the agent's rules (datetime) cost more than the whole
# round trip with the daemon (README.md, "The client: exit codes, trust, start-up").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

MAX_LINE_BYTES = 1 << 20
"""A request line (without its newline) may be at most this long."""

DEFAULT_LIST_LIMIT = 100
DEFAULT_SEARCH_LIMIT = 20
DEFAULT_WAIT_TIMEOUT_S = 10.0
MAX_WAIT_TIMEOUT_S = 600.0


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class Event(StrEnum):
    """Event names streamed by the `watch` op."""

    SESSION_SAVED = "session_saved"
    SESSION_REMOVED = "session_removed"
    UPLOAD_DONE = "upload_done"
    UPLOAD_FAILED = "upload_failed"
    RESCAN = "rescan"


class ProtocolError(Exception):
    """A request that cannot be served; becomes an error response with `code`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- request fields ----------------------------------------------------------------------


def _absolute_path(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"'{name}' must be a non-empty string")
    if "\x00" in value:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"'{name}' must not contain NUL")
    if not value.startswith("/"):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"'{name}' must be an absolute path")
    return value


def _session_id(name: str, value: Any) -> str:
    from sessionctl.agent import is_valid_session_id  # only the daemon checks requests

    if not is_valid_session_id(value):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"'{name}' must be 1-128 bytes of letters, digits, '-' or '_'",
        )
    return str(value)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"'{name}' must be a non-empty string")
    return value


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"'{name}' must be an integer >= 0")
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"'{name}' must be true or false")
    return value


def _seconds(name: str, value: Any) -> float:
    import math  # only the daemon checks requests

    # An int of any size is a number of seconds (math.isfinite would overflow on a huge one).
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"'{name}' must be a number of seconds")
    if isinstance(value, float) and not math.isfinite(value):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"'{name}' must be a number of seconds")
    if value <= 0:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"'{name}' must be greater than 0")
    return MAX_WAIT_TIMEOUT_S if value >= MAX_WAIT_TIMEOUT_S else float(value)


_MACHINE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _machine(name: str, value: Any) -> str:
    """A machine name as `machine_name` allows it (docs/remote.md)."""
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 63
        or not set(value) <= _MACHINE_CHARS
        or value[0] in "._-"
    ):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"'{name}' must be 1-63 letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit",
        )
    return value


class FieldSpec:
    """How one request field is checked, and its value when absent."""

    __slots__ = ("check", "default", "required")

    def __init__(
        self, check: Callable[[str, Any], Any], required: bool = False, default: Any = None
    ) -> None:
        self.check = check
        self.required = required
        self.default = default


_WINDOW = FieldSpec(_count)
_SYNC = FieldSpec(_flag, default=False)
_TIMEOUT = FieldSpec(_seconds, default=DEFAULT_WAIT_TIMEOUT_S)

OPS: dict[str, dict[str, FieldSpec]] = {
    "ping": {},
    "resume": {
        "workspace": FieldSpec(_absolute_path, required=True),
        "window": _WINDOW,
        "sync": _SYNC,
    },
    "get": {"id": FieldSpec(_session_id, required=True), "window": _WINDOW, "sync": _SYNC},
    "list": {
        "workspace": FieldSpec(_absolute_path),
        "limit": FieldSpec(_count, default=DEFAULT_LIST_LIMIT),
        "offset": FieldSpec(_count, default=0),
        "sync": _SYNC,
    },
    "status": {},
    "sync": {"timeout": _TIMEOUT},
    "flush": {"timeout": _TIMEOUT},
    "rescan": {},
    "watch": {},
    "search": {
        "query": FieldSpec(_text, required=True),  # its syntax is checked by the daemon
        "workspace": FieldSpec(_absolute_path),
        "limit": FieldSpec(_count, default=DEFAULT_SEARCH_LIMIT),
        "offset": FieldSpec(_count, default=0),
        "sync": _SYNC,
    },
    "remote_list": {
        "workspace": FieldSpec(_absolute_path),
        "machine": FieldSpec(_machine),
        "limit": FieldSpec(_count, default=DEFAULT_LIST_LIMIT),
        "offset": FieldSpec(_count, default=0),
    },
    "restore": {
        "id": FieldSpec(_session_id, required=True),
        "machine": FieldSpec(_machine),
        "workspace": FieldSpec(_absolute_path),
        "dry_run": FieldSpec(_flag, default=False),
    },
}
"""Every op and its request fields. Fields not named here are ignored, for compatibility."""

_NO_REQ = object()


class Request:
    """A checked request: its op, every field of the op (defaults filled in), its `req` tag."""

    __slots__ = ("args", "op", "req")

    def __init__(self, op: str, args: dict[str, Any] | None = None, req: Any = _NO_REQ) -> None:
        self.op = op
        self.args = {} if args is None else args
        self.req = req

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (self.op, self.args, self.req) == (other.op, other.args, other.req)

    __hash__ = None  # type: ignore[assignment]  # mutable args, as the dataclass had

    def __repr__(self) -> str:
        return f"Request(op={self.op!r}, args={self.args!r}, req={self.req!r})"

    @property
    def has_req(self) -> bool:
        return self.req is not _NO_REQ


def peek_req(obj: Any) -> Any:
    """The `req` tag of a decoded request, even an invalid one, so errors can echo it."""
    if isinstance(obj, Mapping) and "req" in obj:
        return obj["req"]
    return _NO_REQ


def parse_request(obj: Any) -> Request:
    """Check a decoded request object; raise ProtocolError(bad_request) when it is unusable."""
    if not isinstance(obj, Mapping):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a request must be a JSON object")
    op = obj.get("op")
    if not isinstance(op, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a request needs a string 'op'")
    spec = OPS.get(op)
    if spec is None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown op {op[:64]!r}")
    args: dict[str, Any] = {}
    for name, fspec in spec.items():
        value = obj.get(name)  # absent and null are the same
        if value is not None:
            args[name] = fspec.check(name, value)
        elif fspec.required:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"op '{op}' needs field '{name}'")
        else:
            args[name] = fspec.default
    return Request(op, args, obj.get("req", _NO_REQ))


# --- responses ---------------------------------------------------------------------------


def _with_req(body: dict[str, Any], req: Any) -> dict[str, Any]:
    if req is not _NO_REQ:
        body["req"] = req
    return body


def ok_response(fields: Mapping[str, Any] | None = None, req: Any = _NO_REQ) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": True}
    if fields:
        body.update(fields)
    return _with_req(body, req)


def error_response(code: ErrorCode, message: str, req: Any = _NO_REQ) -> dict[str, Any]:
    return _with_req({"ok": False, "error": {"code": str(code), "message": message}}, req)


def event_message(event: Event, fields: Mapping[str, Any]) -> dict[str, Any]:
    return {"event": str(event), **fields}


# --- framing -----------------------------------------------------------------------------


class LineTooLarge(Exception):
    """More than MAX_LINE_BYTES arrived without a newline."""


class LineSplitter:
    """Cuts a byte stream into lines (without the newline) and refuses a line over the limit.

    `feed` returns the complete lines it found. When a line grows past the limit, `too_large`
    becomes true: `feed` still returns the lines that came before it (so they can be answered)
    and raises LineTooLarge on the next call, or at once when there were none.
    `limit=None` accepts any length (a client reading large responses).
    """

    def __init__(self, limit: int | None = MAX_LINE_BYTES) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self._scanned = 0  # bytes already searched for a newline: a long line costs O(n)
        self.too_large = False

    def feed(self, data: bytes) -> list[bytes]:
        if self.too_large:
            raise LineTooLarge
        if not self._buffer:  # the usual chunk, exactly one whole line: skip the buffer
            end = data.find(b"\n")
            if end == len(data) - 1 >= 0 and not self._over_limit(end):
                return [bytes(data[:end])]
        self._buffer += data
        lines: list[bytes] = []
        start = 0
        while not self.too_large:
            end = self._buffer.find(b"\n", max(start, self._scanned))
            if end < 0:
                self._scanned = len(self._buffer)
                self.too_large = self._over_limit(len(self._buffer) - start)
                break
            if self._over_limit(end - start):
                self.too_large = True
                break
            lines.append(bytes(self._buffer[start:end]))
            start = end + 1
        if self.too_large:
            self._buffer.clear()
            self._scanned = 0
            if not lines:
                raise LineTooLarge
        else:
            del self._buffer[:start]
            self._scanned = max(0, self._scanned - start)
        return lines

    def _over_limit(self, length: int) -> bool:
        return self._limit is not None and length > self._limit

    @property
    def pending(self) -> int:
        return len(self._buffer)


# --- the client's codec (the daemon encodes with msgspec instead) -------------------------


_json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""Made once: json.dumps with options builds a new encoder on every call."""


def encode_request(op: str, fields: Mapping[str, Any] | None = None, req: Any = _NO_REQ) -> bytes:
    body: dict[str, Any] = {"op": op}
    if fields:
        for name, value in fields.items():
            if value is not None:
                body[name] = value
    _with_req(body, req)
    return (_json_encoder.encode(body) + "\n").encode()


def decode_message(line: bytes | bytearray | memoryview) -> Any:
    """One decoded line: strict UTF-8 (str() decodes a buffer without copying it to bytes)."""
    return json.loads(str(line, "utf-8"))
