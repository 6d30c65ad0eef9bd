"""The sessiond client library: one persistent Unix-socket connection, one method per op.

Requests are sent one at a time and each reply is one JSON line (interface §4), so a reply is
simply the next line on the connection. Standard library only.
"""

from __future__ import annotations

import builtins
import socket as _socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from sessionctl import protocol
from sessionctl.socket_path import default_socket_path

RECV_BYTES = 1 << 20
MAX_REPLY_BYTES = 1 << 34
"""Replies carry whole sessions (files reach hundreds of MiB): only requests get the 1 MiB cap."""
WAIT_MARGIN_S = 2.0
"""How much longer than a `sync`/`flush` timeout to wait for the daemon's answer to it."""


class ClientError(Exception):
    """Base of the errors this module raises."""


class DaemonUnreachable(ClientError):
    """No usable connection: missing socket, refused, timed out, dropped or garbled."""


class _ConnectionLost(DaemonUnreachable):
    """The connection ended (closed or reset) before a reply arrived."""


class DaemonError(ClientError):
    """The daemon answered `{"ok": false, ...}`."""

    def __init__(self, code: str, message: str, response: dict[str, Any]) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.response = response


def _connect(path: str, timeout: float | None) -> _socket.socket:
    """Connect within `timeout`. A full listen backlog makes a Unix socket refuse at once with
    EAGAIN rather than wait, so that is retried (briefly backing off) until the timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.001
    while True:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
            return sock
        except BlockingIOError as exc:
            sock.close()
            if deadline is not None and time.monotonic() + pause > deadline:
                raise DaemonUnreachable(f"cannot connect to {path}: {exc}") from exc
            time.sleep(pause)  # backing off from a busy listener, not waiting for an event
            pause = min(pause * 2, 0.05)
        except (OSError, ValueError) as exc:
            sock.close()
            raise DaemonUnreachable(f"cannot connect to {path}: {exc}") from exc


class _Connection:
    """One connected stream socket and the lines read from it so far."""

    def __init__(self, path: str, connect_timeout: float | None) -> None:
        self.sock = _connect(path, connect_timeout)
        self.used = False
        self._splitter = protocol.LineSplitter(limit=MAX_REPLY_BYTES)
        self._lines: deque[bytes] = deque()
        self._partial: builtins.list[bytes] = []

    def send(self, data: bytes, deadline: float | None) -> None:
        self._wait_until(deadline)
        try:
            self.sock.sendall(data)
        except TimeoutError as exc:
            raise DaemonUnreachable("the daemon did not take the request in time") from exc
        except OSError as exc:
            raise _ConnectionLost(f"connection lost: {exc}") from exc

    def read_line(self, deadline: float | None) -> bytes:
        """The next line; _ConnectionLost when the daemon closes the connection first."""
        while not self._lines:
            chunk = self._recv(deadline)
            if not chunk:
                raise _ConnectionLost("the daemon closed the connection")
            self._take(chunk)
        return self._lines.popleft()

    def _wait_until(self, deadline: float | None) -> None:
        wait = None if deadline is None else max(deadline - time.monotonic(), 1e-3)
        if wait is not None or self.sock.gettimeout() is not None:
            self.sock.settimeout(wait)

    def _recv(self, deadline: float | None) -> bytes:
        self._wait_until(deadline)
        try:
            return self.sock.recv(RECV_BYTES)
        except TimeoutError as exc:
            raise DaemonUnreachable("the daemon did not answer in time") from exc
        except OSError as exc:
            raise _ConnectionLost(f"connection lost: {exc}") from exc

    def _take(self, chunk: bytes) -> None:
        # Feed the splitter only once a newline arrives, so a many-MiB reply is scanned once.
        self._partial.append(chunk)
        if b"\n" not in chunk:
            return
        data = b"".join(self._partial)
        self._partial.clear()
        try:
            self._lines.extend(self._splitter.feed(data))
        except protocol.LineTooLarge as exc:
            raise DaemonUnreachable("reply line too large") from exc

    def close(self) -> None:
        self.sock.close()


def _decode_reply(line: bytes) -> dict[str, Any]:
    try:
        reply = protocol.decode_message(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DaemonUnreachable("the daemon sent a line that is not JSON") from exc
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise DaemonUnreachable("the daemon sent something that is not a reply")
    return reply


def _check_reply(reply: dict[str, Any]) -> dict[str, Any]:
    if reply["ok"]:
        return reply
    error = reply.get("error")
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code", protocol.ErrorCode.INTERNAL))
    raise DaemonError(code, str(error.get("message", "")), reply)


class Client:
    """A connection to sessiond, opened on first use and reused by every call.

    `timeout` bounds the wait for each reply (None: wait as long as it takes); `connect_timeout`
    bounds connecting. Safe to share between threads: calls are serialized.
    """

    def __init__(
        self,
        socket: str | None = None,
        timeout: float | None = None,
        connect_timeout: float = 0.1,
    ) -> None:
        self.socket_path = socket if socket is not None else default_socket_path()
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._conn: _Connection | None = None
        self._lock = threading.Lock()

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> _Connection:
        return _Connection(self.socket_path, self.connect_timeout)

    # --- requests ----------------------------------------------------------------------------

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send `{"op": op, **fields}` (None fields left out) and return the `ok` reply."""
        return self._call(op, fields, self.timeout)

    def _call(self, op: str, fields: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        data = self._encode(op, fields)
        with self._lock:
            try:
                reply = self._exchange(data, timeout)
            except DaemonUnreachable:
                self._drop()
                raise
            if not reply["ok"] and _error_code(reply) == protocol.ErrorCode.TOO_LARGE:
                self._drop()  # the daemon closes the connection after `too_large`
        return _check_reply(reply)

    @staticmethod
    def _encode(op: str, fields: dict[str, Any]) -> bytes:
        fields = dict(fields)
        req = fields.pop("req", None)
        data = (
            protocol.encode_request(op, fields)
            if req is None
            else protocol.encode_request(op, fields, req)
        )
        if len(data) - 1 > protocol.MAX_LINE_BYTES:
            body = protocol.error_response(protocol.ErrorCode.TOO_LARGE, "request line too large")
            raise DaemonError(protocol.ErrorCode.TOO_LARGE, "request line too large", body)
        return data

    def _exchange(self, data: bytes, timeout: float | None) -> dict[str, Any]:
        reused = self._conn is not None and self._conn.used
        try:
            return self._send_and_read(data, timeout)
        except _ConnectionLost:
            if not reused:
                raise
            self._drop()
        # A kept connection may have died with an earlier daemon; one fresh try tells.
        return self._send_and_read(data, timeout)

    def _send_and_read(self, data: bytes, timeout: float | None) -> dict[str, Any]:
        if self._conn is None:
            self._conn = self._connect()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._conn.send(data, deadline)
        reply = _decode_reply(self._conn.read_line(deadline))
        self._conn.used = True
        return reply

    # --- one method per op ---------------------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        return self.request("ping")

    def resume(
        self, workspace: str, window: int | None = None, sync: bool = False
    ) -> dict[str, Any]:
        return self.request("resume", workspace=workspace, window=window, sync=sync or None)

    def get(self, id: str, window: int | None = None, sync: bool = False) -> dict[str, Any]:
        return self.request("get", id=id, window=window, sync=sync or None)

    def status(self) -> dict[str, Any]:
        return self.request("status")

    def sync(self, timeout: float | None = None) -> dict[str, Any]:
        return self._call("sync", {"timeout": timeout}, self._wait_timeout(timeout))

    def flush(self, timeout: float | None = None) -> dict[str, Any]:
        return self._call("flush", {"timeout": timeout}, self._wait_timeout(timeout))

    def rescan(self) -> dict[str, Any]:
        return self.request("rescan")

    def _wait_timeout(self, op_timeout: float | None) -> float | None:
        """A reply deadline that outlasts the daemon's own wait for `sync`/`flush`."""
        if self.timeout is None:
            return None
        daemon_wait = protocol.DEFAULT_WAIT_TIMEOUT_S if op_timeout is None else op_timeout
        daemon_wait = min(daemon_wait, protocol.MAX_WAIT_TIMEOUT_S)
        return max(self.timeout, daemon_wait + WAIT_MARGIN_S)

    def watch(self) -> Iterator[dict[str, Any]]:
        """Subscribe now (on a connection of its own) and return the events as the daemon
        streams them: everything that happens after this returns is in the stream. Closing
        the iterator closes the connection; it raises DaemonUnreachable when the stream ends."""
        conn = self._connect()
        try:
            deadline = None if self.timeout is None else time.monotonic() + self.timeout
            conn.send(protocol.encode_request("watch"), deadline)
            _check_reply(_decode_reply(conn.read_line(deadline)))
        except BaseException:
            conn.close()
            raise
        return self._events(conn)

    @staticmethod
    def _events(conn: _Connection) -> Iterator[dict[str, Any]]:
        try:
            while True:
                line = conn.read_line(None)  # events come when they come
                try:
                    event = protocol.decode_message(line)
                except (UnicodeDecodeError, ValueError) as exc:
                    raise DaemonUnreachable("the daemon sent a line that is not JSON") from exc
                if isinstance(event, dict):
                    yield event
        finally:
            conn.close()

    # `list` last: inside the class body its name shadows the builtin for the annotations above.
    def list(
        self,
        workspace: str | None = None,
        limit: int = 100,
        offset: int = 0,
        sync: bool = False,
    ) -> dict[str, Any]:
        return self.request(
            "list", workspace=workspace, limit=limit, offset=offset, sync=sync or None
        )


def _error_code(reply: dict[str, Any]) -> str | None:
    error = reply.get("error")
    return error.get("code") if isinstance(error, dict) else None


__all__ = ["Client", "ClientError", "DaemonError", "DaemonUnreachable"]
