"""The sessiond wire protocol, sans I/O: one definition shared by the daemon, the client and tests.

The protocol is UTF-8 JSON, one object per line, over a stream socket (docs/protocol.md). This
module only turns bytes into lines, turns decoded requests into typed ones (one class per op,
as h11 has one per event), encodes typed requests and builds response objects. It never
touches a socket or a file, and it does not pick a JSON codec: the client uses the standard
library's, the daemon msgspec. Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import Enum, StrEnum

# Imported for type checkers only: `sessionctl resume` imports this module on every call, and
# typing, dataclasses (with inspect) and the agent's rules (datetime) cost more than the whole
# round trip with the daemon (README.md, "The client: exit codes, trust, start-up").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar

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


class _Absent(Enum):
    NO_REQ = "no req"


NO_REQ = _Absent.NO_REQ
"""No `req` in the request (any JSON value, null included, can be one): a sentinel of its own
type, so a misplaced one cannot pass for a JSON value."""


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


class Field:
    """How one request field is read off the wire: its name, its check, whether it is required.
    Its default is the one of the request class's constructor."""

    __slots__ = ("check", "name", "required")

    def __init__(self, name: str, check: Callable[[str, Any], Any], required: bool = False) -> None:
        self.name = name
        self.check = check
        self.required = required


_WINDOW = Field("window", _count)
_SYNC = Field("sync", _flag)
_LIMIT = Field("limit", _count)
_OFFSET = Field("offset", _count)
_WORKSPACE = Field("workspace", _absolute_path)
_TIMEOUT = Field("timeout", _seconds)


class Request:
    """A request: one subclass per op, its fields as attributes (docs/protocol.md, "Ops").

    `decode_request` builds one from a decoded line and checks every field; the constructors
    check nothing (the client sends what it is given, and the daemon refuses what is wrong).
    `FIELDS` lists the op's fields in the order they are checked: the first wrong one is the
    error. The envelope's `req` is not part of a request (`peek_req`, `encode_request`).
    """

    __slots__ = ()
    op: ClassVar[str]
    FIELDS: ClassVar[tuple[Field, ...]] = ()
    _defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls) -> None:
        # The constructor's keyword defaults are the op's defaults: the encoder leaves them out.
        cls._defaults = getattr(cls.__init__, "__kwdefaults__", None) or {}

    def fields(self) -> dict[str, Any]:
        """Every field of the op, defaults included."""
        return {field.name: getattr(self, field.name) for field in self.FIELDS}

    def wire_fields(self) -> dict[str, Any]:
        """The fields a request line carries: those that are set and not at their default."""
        defaults = self._defaults
        body: dict[str, Any] = {}
        for field in self.FIELDS:
            value = getattr(self, field.name)
            if value is None:
                continue
            if field.name in defaults:
                default = defaults[field.name]
                if type(value) is type(default) and value == default:
                    continue
            body[field.name] = value
        return body

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Request)
        return self.fields() == other.fields()

    __hash__ = None  # type: ignore[assignment]  # its fields can be set

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.fields().items())
        return f"{type(self).__name__}({shown})"


class Ping(Request):
    __slots__ = ()
    op = "ping"


class Resume(Request):
    __slots__ = ("sync", "window", "workspace")
    op = "resume"
    FIELDS = (Field("workspace", _absolute_path, required=True), _WINDOW, _SYNC)

    def __init__(self, workspace: str, *, window: int | None = None, sync: bool = False) -> None:
        self.workspace = workspace
        self.window = window  # None: the header only
        self.sync = sync


class Get(Request):
    __slots__ = ("id", "sync", "window")
    op = "get"
    FIELDS = (Field("id", _session_id, required=True), _WINDOW, _SYNC)

    def __init__(self, id: str, *, window: int | None = None, sync: bool = False) -> None:
        self.id = id
        self.window = window
        self.sync = sync


class List(Request):
    __slots__ = ("limit", "offset", "sync", "workspace")
    op = "list"
    FIELDS = (_WORKSPACE, _LIMIT, _OFFSET, _SYNC)

    def __init__(
        self,
        *,
        workspace: str | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
        offset: int = 0,
        sync: bool = False,
    ) -> None:
        self.workspace = workspace  # None: every workspace
        self.limit = limit
        self.offset = offset
        self.sync = sync


class Status(Request):
    __slots__ = ()
    op = "status"


class Sync(Request):
    __slots__ = ("timeout",)
    op = "sync"
    FIELDS = (_TIMEOUT,)

    def __init__(self, *, timeout: float = DEFAULT_WAIT_TIMEOUT_S) -> None:
        self.timeout = timeout  # decoding caps it at MAX_WAIT_TIMEOUT_S


class Flush(Request):
    __slots__ = ("timeout",)
    op = "flush"
    FIELDS = (_TIMEOUT,)

    def __init__(self, *, timeout: float = DEFAULT_WAIT_TIMEOUT_S) -> None:
        self.timeout = timeout  # one deadline for the barrier and the uploads


class Rescan(Request):
    __slots__ = ()
    op = "rescan"


class Watch(Request):
    """Turns the connection into an event stream (docs/protocol.md, "The watch stream")."""

    __slots__ = ()
    op = "watch"


class Search(Request):
    __slots__ = ("limit", "offset", "query", "sync", "workspace")
    op = "search"
    # The query's syntax is checked by the daemon (docs/search.md, "Query syntax").
    FIELDS = (Field("query", _text, required=True), _WORKSPACE, _LIMIT, _OFFSET, _SYNC)

    def __init__(
        self,
        query: str,
        *,
        workspace: str | None = None,
        limit: int = DEFAULT_SEARCH_LIMIT,
        offset: int = 0,
        sync: bool = False,
    ) -> None:
        self.query = query
        self.workspace = workspace
        self.limit = limit
        self.offset = offset
        self.sync = sync


class RemoteList(Request):
    __slots__ = ("limit", "machine", "offset", "workspace")
    op = "remote_list"
    FIELDS = (_WORKSPACE, Field("machine", _machine), _LIMIT, _OFFSET)

    def __init__(
        self,
        *,
        workspace: str | None = None,
        machine: str | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
        offset: int = 0,
    ) -> None:
        self.workspace = workspace
        self.machine = machine  # None: every machine
        self.limit = limit
        self.offset = offset


class Restore(Request):
    __slots__ = ("dry_run", "id", "machine", "workspace")
    op = "restore"
    FIELDS = (
        Field("id", _session_id, required=True),
        Field("machine", _machine),
        _WORKSPACE,
        Field("dry_run", _flag),
    )

    def __init__(
        self,
        id: str,
        *,
        machine: str | None = None,
        workspace: str | None = None,
        dry_run: bool = False,
    ) -> None:
        self.id = id
        self.machine = machine  # None: the newest copy
        self.workspace = workspace  # None: the session's own directory
        self.dry_run = dry_run


OPS: dict[str, type[Request]] = {
    cls.op: cls
    for cls in (
        *(Ping, Resume, Get, List, Status, Sync, Flush, Rescan, Watch, Search),
        *(RemoteList, Restore),
    )
}
"""Every op and its request class. Fields an op does not name are ignored, for compatibility."""


def peek_req(obj: Any) -> Any:
    """The `req` tag of a decoded request, even an invalid one, so errors can echo it."""
    if isinstance(obj, Mapping) and "req" in obj:
        return obj["req"]
    return NO_REQ


def decode_request(obj: Any) -> Request:
    """The typed request of a decoded request object, every field checked; raise
    ProtocolError(bad_request) when it is unusable (docs/protocol.md, "Error codes")."""
    if not isinstance(obj, Mapping):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a request must be a JSON object")
    op = obj.get("op")
    if not isinstance(op, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a request needs a string 'op'")
    cls = OPS.get(op)
    if cls is None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown op {op[:64]!r}")
    args: dict[str, Any] = {}
    for field in cls.FIELDS:
        value = obj.get(field.name)  # absent and null are the same
        if value is not None:
            args[field.name] = field.check(field.name, value)
        elif field.required:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"op '{op}' needs field '{field.name}'")
    build: Callable[..., Request] = cls  # the fields checked are the constructor's arguments
    return build(**args)


# --- responses ---------------------------------------------------------------------------


def _with_req(body: dict[str, Any], req: Any) -> dict[str, Any]:
    if req is not NO_REQ:
        body["req"] = req
    return body


def ok_response(fields: Mapping[str, Any] | None = None, req: Any = NO_REQ) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": True}
    if fields:
        body.update(fields)
    return _with_req(body, req)


def error_response(code: ErrorCode, message: str, req: Any = NO_REQ) -> dict[str, Any]:
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


def encode_request(request: Request, req: Any = NO_REQ) -> bytes:
    """The request line for `request`: its op, the fields not at their default, `req` if given."""
    return encode_message(request.op, request.wire_fields(), req)


def encode_message(op: str, fields: Mapping[str, Any] | None = None, req: Any = NO_REQ) -> bytes:
    """A request line for any op and fields, unchecked (None fields left out): for an op this
    module does not know yet, and for tests that send what a typed request cannot hold."""
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
