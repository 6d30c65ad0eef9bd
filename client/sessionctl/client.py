"""The sessiond client library: one persistent Unix-socket connection, one method per op.

Each method builds the op's typed request (sessionctl.protocol). Requests are sent one at a
time and each reply is one JSON line (docs/protocol.md, "Framing"), so a reply is simply the
next line on the connection. Standard library only.
"""

from __future__ import annotations

# `_socket` is what `socket` wraps: the same socket objects and errors, without building the
# module's enums (1.7 ms of every `sessionctl` start; README.md, "The client").
import _socket
import _thread  # threading's lock, without threading's import (0.6 ms)
import os
import sys
import time

from sessionctl import protocol
from sessionctl.socket_path import IMPERSONATION_HINT as HINT
from sessionctl.socket_path import default_socket_path, folder_problem

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs 2 ms to import: annotations only
    from collections.abc import Generator
    from typing import Any

RECV_BYTES = 64 * 1024
"""The receive buffer to start with: most replies fit. A bigger reply grows it, doubling, and it
goes back to this size afterwards. (A 1 MiB recv() cost ~17 us per reply in allocation alone.)"""
MAX_REPLY_BYTES = 1 << 34
"""Replies carry whole sessions (files reach hundreds of MiB): only requests get the 1 MiB cap."""
MIN_WAIT_S = 1e-3
"""A call made at or past its deadline still gets this long."""
TIMEOUT_SLACK_S = 2e-3
"""How far past its deadline a call may end: settimeout() is called again only when the timeout
already set would end the next call earlier than the deadline, or later than this past it."""
WAIT_MARGIN_S = 2.0
"""How much longer than a `sync`/`flush` timeout to wait for the daemon's answer to it."""


class ClientError(Exception):
    """Base of the errors this module raises."""


class DaemonUnreachable(ClientError):
    """No usable connection: missing socket, refused, timed out, dropped or garbled."""


class _ConnectionLost(DaemonUnreachable):
    """The connection ended (closed or reset) before a reply arrived."""


class DaemonUntrusted(DaemonUnreachable):
    """The socket could have been set up by another user: its folder is not the user's own and
    private, or the process answering on it runs as another uid. Nothing is sent to it."""


class DaemonError(ClientError):
    """The daemon answered `{"ok": false, ...}`."""

    def __init__(self, code: str, message: str, response: dict[str, Any]) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.response = response


def _check_folder(path: str) -> None:
    """Refuse a socket whose folder another user owns or may write in (docs/protocol.md,
    "Trusting the socket"): such a user could have put their own listener there. One stat; a
    folder that cannot be stat'ed is left to connect() to report."""
    folder = os.path.dirname(path) or "."
    try:
        st = os.stat(folder)
    except OSError:
        return
    problem = folder_problem(st, os.getuid())
    if problem is not None:
        raise DaemonUntrusted(f"refusing {path}: its folder {folder} {problem}; {HINT}")


def _check_peer(path: str, sock: _socket.socket) -> None:
    """Refuse a listener that runs as another uid (SO_PEERCRED: the credentials it had when it
    called listen()). struct ucred is three 32-bit ints: pid, uid, gid."""
    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    peer = int.from_bytes(creds[4:8], sys.byteorder)
    uid = os.getuid()
    if peer != uid:
        raise DaemonUntrusted(
            f"refusing {path}: the process answering on it runs as uid {peer}, not as you "
            f"(uid {uid}); {HINT}"
        )


def _connect(path: str, timeout: float | None) -> _socket.socket:
    """Connect within `timeout` to a socket the user's own daemon set up. A full listen backlog
    makes a Unix socket refuse at once with EAGAIN rather than wait, so that is retried
    (briefly backing off) until the timeout."""
    _check_folder(path)
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.001
    while True:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
            _check_peer(path, sock)
            return sock
        except DaemonUntrusted:
            sock.close()
            raise
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
    """One connected stream socket and the bytes read from it but not yet taken as lines.

    Bytes are received straight into one reusable buffer; a line is decoded from it in place. A
    reply that arrives in one chunk therefore costs one recv_into and one decode, and one of
    hundreds of MiB is not copied from chunk to chunk.
    """

    def __init__(self, path: str, connect_timeout: float | None) -> None:
        self.sock = _connect(path, connect_timeout)
        self.used = False
        self._timeout = self.sock.gettimeout()  # what settimeout() last set
        self._buf = bytearray(RECV_BYTES)
        self._view = memoryview(self._buf)
        self._start = 0  # bytes [_start:_end) of _buf are received and not yet taken
        self._end = 0
        self._scanned = 0  # no newline in [_start:_scanned)

    def send(self, data: bytes, deadline: float | None) -> None:
        self._set_timeout(deadline)
        try:
            self.sock.sendall(data)
        except TimeoutError as exc:
            raise DaemonUnreachable("the daemon did not take the request in time") from exc
        except OSError as exc:
            raise _ConnectionLost(f"connection lost: {exc}") from exc

    def read_message(self, deadline: float | None) -> Any:
        """The next line, decoded; _ConnectionLost when the daemon closes the connection first,
        DaemonUnreachable when the line is not JSON."""
        while True:
            end = self._buf.find(b"\n", self._scanned, self._end)
            if end >= 0:
                break
            self._scanned = self._end
            if self._end - self._start > MAX_REPLY_BYTES:
                raise DaemonUnreachable("reply line too large")
            self._recv(deadline)
        start = self._start
        if end - start > MAX_REPLY_BYTES:
            raise DaemonUnreachable("reply line too large")
        self._start = self._scanned = end + 1
        line = self._view[start:end]
        try:
            return protocol.decode_message(line)
        except (UnicodeDecodeError, ValueError) as exc:
            raise DaemonUnreachable("the daemon sent a line that is not JSON") from exc
        finally:
            line.release()  # even if a traceback keeps it: the buffer must stay resizable
            if self._start == self._end:
                self._empty()

    def _set_timeout(self, deadline: float | None) -> None:
        if deadline is None:
            if self._timeout is not None:
                self.sock.settimeout(None)
                self._timeout = None
            return
        wait = max(deadline - time.monotonic(), MIN_WAIT_S)
        timeout = self._timeout
        if timeout is None or not wait <= timeout <= wait + TIMEOUT_SLACK_S:
            # Set mid-slack, so that the next requests' deadlines fit it too.
            self._timeout = wait + TIMEOUT_SLACK_S / 2
            self.sock.settimeout(self._timeout)

    def _recv(self, deadline: float | None) -> None:
        if self._end == len(self._buf):
            self._make_room()
        self._set_timeout(deadline)
        try:
            n = self.sock.recv_into(self._view[self._end :] if self._end else self._buf)
        except TimeoutError as exc:
            raise DaemonUnreachable("the daemon did not answer in time") from exc
        except OSError as exc:
            raise _ConnectionLost(f"connection lost: {exc}") from exc
        if not n:
            raise _ConnectionLost("the daemon closed the connection")
        self._end += n

    def _make_room(self) -> None:
        """Drop the bytes taken and grow the buffer by at least what it holds: a reply of n
        bytes costs O(n) however many chunks it comes in."""
        self._view.release()  # a bytearray with a view on it cannot be resized
        if self._start:
            del self._buf[: self._start]  # O(1) in CPython: the start of the buffer moves
            self._end -= self._start
            self._scanned -= self._start
            self._start = 0
        self._buf += bytes(max(self._end, RECV_BYTES))
        self._view = memoryview(self._buf)

    def _empty(self) -> None:
        """Everything received was taken: start over, with a small buffer again."""
        self._start = self._end = self._scanned = 0
        if len(self._buf) > RECV_BYTES:  # let a large reply's memory go
            self._view.release()
            self._buf = bytearray(RECV_BYTES)
            self._view = memoryview(self._buf)

    def close(self) -> None:
        self.sock.close()


def _check_shape(reply: Any) -> dict[str, Any]:
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
        self._lock = _thread.allocate_lock()

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

    def send(self, request: protocol.Request, timeout: float | None = None) -> dict[str, Any]:
        """Send a typed request and return the `ok` reply; `timeout` defaults to the client's."""
        data = self._checked_size(protocol.encode_request(request))
        return self._call(data, self.timeout if timeout is None else timeout)

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send `{"op": op, **fields}` unchecked (None fields left out, `req` as the tag) and
        return the `ok` reply: for an op this client does not know, and for tests."""
        req = fields.pop("req", None)  # None: no tag, as for every other None field
        data = protocol.encode_message(op, fields, protocol.NO_REQ if req is None else req)
        return self._call(self._checked_size(data), self.timeout)

    def _call(self, data: bytes, timeout: float | None) -> dict[str, Any]:
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
    def _checked_size(data: bytes) -> bytes:
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
        reply = _check_shape(self._conn.read_message(deadline))
        self._conn.used = True
        return reply

    # --- one method per op ---------------------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        return self.send(protocol.Ping())

    def resume(
        self, workspace: str, window: int | None = None, sync: bool = False
    ) -> dict[str, Any]:
        return self.send(protocol.Resume(workspace, window=window, sync=sync))

    def get(self, id: str, window: int | None = None, sync: bool = False) -> dict[str, Any]:
        return self.send(protocol.Get(id, window=window, sync=sync))

    def status(self) -> dict[str, Any]:
        return self.send(protocol.Status())

    def sync(self, timeout: float | None = None) -> dict[str, Any]:
        request = protocol.Sync() if timeout is None else protocol.Sync(timeout=timeout)
        return self.send(request, self._wait_timeout(request.timeout))

    def flush(self, timeout: float | None = None) -> dict[str, Any]:
        request = protocol.Flush() if timeout is None else protocol.Flush(timeout=timeout)
        return self.send(request, self._wait_timeout(request.timeout))

    def rescan(self) -> dict[str, Any]:
        return self.send(protocol.Rescan())

    def search(
        self,
        query: str,
        workspace: str | None = None,
        limit: int = protocol.DEFAULT_SEARCH_LIMIT,
        offset: int = 0,
        sync: bool = False,
    ) -> dict[str, Any]:
        """Full-text search (docs/protocol.md `search`): hits best first, `total`."""
        return self.send(
            protocol.Search(query, workspace=workspace, limit=limit, offset=offset, sync=sync)
        )

    def remote_list(
        self,
        workspace: str | None = None,
        machine: str | None = None,
        limit: int = protocol.DEFAULT_LIST_LIMIT,
        offset: int = 0,
    ) -> dict[str, Any]:
        return self.send(
            protocol.RemoteList(workspace=workspace, machine=machine, limit=limit, offset=offset)
        )

    def restore(
        self,
        id: str,
        machine: str | None = None,
        workspace: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        return self.send(
            protocol.Restore(id, machine=machine, workspace=workspace, dry_run=dry_run)
        )

    def _wait_timeout(self, op_timeout: float) -> float | None:
        """A reply deadline that outlasts the daemon's own wait for `sync`/`flush`."""
        if self.timeout is None:
            return None
        daemon_wait = min(op_timeout, protocol.MAX_WAIT_TIMEOUT_S)
        return max(self.timeout, daemon_wait + WAIT_MARGIN_S)

    def watch(self) -> Generator[dict[str, Any], None, None]:
        """Subscribe now (on a connection of its own) and return the events as the daemon
        streams them: everything that happens after this returns is in the stream. Closing
        the iterator closes the connection; it raises DaemonUnreachable when the stream ends."""
        conn = self._connect()
        try:
            deadline = None if self.timeout is None else time.monotonic() + self.timeout
            conn.send(protocol.encode_request(protocol.Watch()), deadline)
            _check_reply(_check_shape(conn.read_message(deadline)))
        except BaseException:
            conn.close()
            raise
        return self._events(conn)

    @staticmethod
    def _events(conn: _Connection) -> Generator[dict[str, Any], None, None]:
        try:
            while True:
                event = conn.read_message(None)  # events come when they come
                if isinstance(event, dict):
                    yield event
        finally:
            conn.close()

    # `list` last: inside the class body its name shadows the builtin for the annotations above.
    def list(
        self,
        workspace: str | None = None,
        limit: int = protocol.DEFAULT_LIST_LIMIT,
        offset: int = 0,
        sync: bool = False,
    ) -> dict[str, Any]:
        return self.send(protocol.List(workspace=workspace, limit=limit, offset=offset, sync=sync))


def _error_code(reply: dict[str, Any]) -> str | None:
    error = reply.get("error")
    return error.get("code") if isinstance(error, dict) else None


__all__ = ["Client", "ClientError", "DaemonError", "DaemonUnreachable", "DaemonUntrusted"]
