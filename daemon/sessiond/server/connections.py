"""The socket's connections: accepting, framing, decoding requests, handing them to Ops, and
errors that stay with their request.

Each connection reads newline-framed requests and answers them in order. Nothing a client
sends can stop the daemon serving others: bad input gets an error response, an oversized line
gets `too_large` and the connection is closed, and a bug in a handler becomes an `internal`
error with a logged traceback.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import socket
import time
from typing import Any

import msgspec
from sessionctl.protocol import (
    NO_REQ,
    ErrorCode,
    Flush,
    LineSplitter,
    LineTooLarge,
    ProtocolError,
    Request,
    Rescan,
    Sync,
    Watch,
    decode_request,
    error_response,
    ok_response,
    peek_req,
)

from sessiond import trim_memory
from sessiond.logs import log_event
from sessiond.server.events import Delivery, EventHub, StreamEnd
from sessiond.server.limits import Limits, fit_descriptors
from sessiond.server.listener import peer_uid
from sessiond.server.ops import Ops

READ_CHUNK = 256 * 1024
ACCEPT_BATCH = 64  # connections accepted per wake-up, so a burst does not starve the loop
ACCEPT_PAUSE_S = 0.1  # accept() is retried after this when the process is out of descriptors
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
WRITE_CHUNK = 256 * 1024
"""A reply larger than this is handed to the transport a chunk at a time, each once the last
has left: the transport then holds a copy of one chunk, not of the whole reply."""
TRIM_DELAY_S = 1.0  # after a large reply is gone, freed memory is given back once, this late
SLOW_REQUEST_S = 0.1
UNTIMED = (Sync, Flush, Rescan)  # they wait by design: never "slow"
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def encode_line(message: Any) -> bytearray:
    # Encoded into a buffer that takes the newline too: a reply can be many MiB, and
    # `encode(...) + b"\n"` would copy it once more.
    line = bytearray()
    _encoder.encode_into(message, line)
    line += b"\n"
    return line


class Server:
    def __init__(
        self, ops: Ops, hub: EventHub, ready: asyncio.Event, limits: Limits | None = None
    ) -> None:
        self._limits = fit_descriptors(limits or Limits())
        self._ops = ops
        self._hub = hub
        self._ready = ready
        self._listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accept_paused = False
        self._connections: set[asyncio.Task[None]] = set()
        self._trim: asyncio.TimerHandle | None = None

    async def start(self, sock: socket.socket) -> None:
        # sessiond accepts by itself instead of asyncio.start_unix_server: asyncio accepts up
        # to its backlog (here thousands) in one go before any connection is counted, so a
        # burst of clients would take every descriptor the indexer needs to read a save.
        # Here a connection is counted as it is accepted, and one past the cap is answered and
        # closed at once: connections never hold more than the cap plus one descriptor, and
        # the rest (FD_RESERVE, server/limits.py) stays for the daemon's own work.
        self._listener = sock
        self._loop = asyncio.get_running_loop()
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._accept_ready)

    async def close(self) -> None:
        if self._listener is not None and self._loop is not None:
            self._loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        if self._trim is not None:
            self._trim.cancel()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    def _accept_ready(self) -> None:
        assert self._listener is not None and self._loop is not None
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    self._pause_accepting(exc)
                    return
                raise
            if len(self._connections) >= self._limits.max_connections:
                self._refuse(conn)
                continue
            conn.setblocking(False)
            task = self._loop.create_task(self._serve_socket(conn))
            self._connections.add(task)  # counted now, not when the task first runs
            task.add_done_callback(self._connections.discard)

    def _pause_accepting(self, exc: OSError) -> None:
        """Out of descriptors all the same (another part of the daemon holds them): stop
        accepting for a moment; clients wait in the backlog instead of spinning the loop."""
        assert self._listener is not None and self._loop is not None
        if not self._accept_paused:
            log_event("accept_paused", logging.WARNING, error=exc.strerror or str(exc))
        self._accept_paused = True
        self._loop.remove_reader(self._listener.fileno())
        self._loop.call_later(ACCEPT_PAUSE_S, self._resume_accepting)

    def _resume_accepting(self) -> None:
        if self._listener is not None and self._loop is not None:
            self._accept_paused = False
            self._loop.add_reader(self._listener.fileno(), self._accept_ready)

    def _refuse(self, conn: socket.socket) -> None:
        """Answer a connection over the cap with the error line, without waiting, and close it."""
        message = f"too many connections (limit {self._limits.max_connections})"
        try:
            conn.setblocking(False)
            conn.send(encode_line(error_response(ErrorCode.UNAVAILABLE, message)))
        except OSError:
            pass
        finally:
            conn.close()

    async def _serve_socket(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn, limit=READ_CHUNK)
        except OSError:
            conn.close()
            return
        await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not self._admit(writer):
                return
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log_event("connection_error", logging.ERROR, exc_info=True)
        finally:
            writer.close()

    def _admit(self, writer: asyncio.StreamWriter) -> bool:
        sock = writer.get_extra_info("socket")
        uid = peer_uid(sock) if sock is not None else None
        if uid is not None and uid != os.getuid():
            log_event("peer_refused", logging.WARNING, peer_uid=uid)
            writer.write(encode_line(error_response(ErrorCode.BAD_REQUEST, "peer uid refused")))
            return False
        return True

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = task.get_loop()
        transport = writer.transport
        high_water = transport.get_write_buffer_limits()[1]
        splitter = LineSplitter()
        deadline = _ReadDeadline(task)
        line_started = 0.0  # when the first byte of the unfinished line came
        try:
            while True:
                if splitter.pending:  # the whole line must come in time, not each byte of it
                    deadline.arm(line_started + self._limits.partial_line_timeout_s)
                else:
                    deadline.arm(loop.time() + self._limits.idle_timeout_s)
                try:
                    data = await reader.read(READ_CHUNK)
                except asyncio.CancelledError:
                    if not deadline.expired or task.uncancel():
                        raise  # cancelled by someone else too (the daemon stopping)
                    log_event("connection_timeout", partial_line=bool(splitter.pending))
                    return
                deadline.disarm()  # no timeout while requests are answered
                if not data:
                    return
                waiting = splitter.pending
                try:
                    lines = splitter.feed(data)
                except LineTooLarge:
                    lines = []
                if splitter.pending and (lines or not waiting):
                    line_started = loop.time()
                for line in lines:
                    request, reply = await self._handle(line)
                    if isinstance(request, Watch):
                        # Subscribed before the ok goes out: a client that saves as soon as it
                        # reads the ok must get the event of that save.
                        await self._stream_events(reader, writer, self._hub.subscribe(), reply)
                        return
                    if len(reply) > WRITE_CHUNK:
                        await self._send_large(writer, reply, deadline)
                        continue
                    writer.write(reply)
                    # drain() only waits above the high-water mark; below it, it is a wasted
                    # coroutine per reply. A lost connection still shows: the next read ends.
                    # Requests already read wait meanwhile: a client that does not read its
                    # replies has at most one queued (docs/protocol.md, "Connections").
                    if transport.get_write_buffer_size() > high_water or transport.is_closing():
                        await self._drain(writer, deadline)
                if splitter.too_large:
                    message = "request line longer than 1 MiB"
                    writer.write(encode_line(error_response(ErrorCode.TOO_LARGE, message)))
                    await writer.drain()
                    return
        finally:
            deadline.close()

    async def _drain(self, writer: asyncio.StreamWriter, deadline: _ReadDeadline) -> None:
        """Wait until the client has read enough of its replies; one that reads nothing for
        `idle_timeout_s` is closed (the reply it holds is freed)."""
        loop = asyncio.get_running_loop()
        deadline.arm(loop.time() + self._limits.idle_timeout_s)
        try:
            await writer.drain()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not deadline.expired or (task is not None and task.uncancel()):
                raise
            log_event("connection_timeout", partial_line=False, unread_reply=True)
            raise ConnectionAbortedError("reply not read in time") from None
        finally:
            deadline.disarm()

    async def _send_large(
        self, writer: asyncio.StreamWriter, reply: bytearray, deadline: _ReadDeadline
    ) -> None:
        """Write `reply` a chunk at a time; afterwards, however it ends, give its memory back
        (glibc keeps the pages of freed large buffers otherwise: docs/protocol.md)."""
        view = memoryview(reply)
        try:
            for start in range(0, len(view), WRITE_CHUNK):
                writer.write(view[start : start + WRITE_CHUNK])
                transport = writer.transport
                if transport.get_write_buffer_size() > 0 or transport.is_closing():
                    await self._drain(writer, deadline)
        finally:
            del view
            self._trim_soon()

    def _trim_soon(self) -> None:
        if self._trim is None:
            loop = asyncio.get_running_loop()
            self._trim = loop.call_later(TRIM_DELAY_S, self._trim_now)

    def _trim_now(self) -> None:
        self._trim = None
        trim_memory.trim()

    async def _handle(self, line: bytes) -> tuple[Request | None, bytearray]:
        """Answer one request line; never raises."""
        req: Any = NO_REQ  # no `req` to echo until one is read
        started = time.monotonic()
        request: Request | None = None
        try:
            try:
                obj = _decoder.decode(line)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                raise ProtocolError(ErrorCode.BAD_REQUEST, f"invalid JSON: {exc}") from None
            except RecursionError:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "JSON nested too deeply") from None
            req = peek_req(obj)
            request = decode_request(obj)
            if not self._ready.is_set():
                await self._ready.wait()
            fields = await self._ops.answer(request)
            reply = encode_line(ok_response(fields, req=req))
        except ProtocolError as exc:
            return request, encode_line(error_response(exc.code, exc.message, req=req))
        except Exception as exc:
            log_event(
                "request_failed",
                logging.ERROR,
                op=getattr(request, "op", None),
                error=repr(exc)[:200],
                exc_info=True,
            )
            return None, encode_line(error_response(ErrorCode.INTERNAL, "internal error", req=req))
        elapsed = time.monotonic() - started
        if elapsed > SLOW_REQUEST_S and not isinstance(request, UNTIMED):
            log_event(
                "slow_request", logging.WARNING, op=request.op, duration_ms=round(elapsed * 1000, 1)
            )
        return request, reply

    async def _stream_events(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        queue: asyncio.Queue[Delivery],
        ok: bytearray,
    ) -> None:
        closed = asyncio.ensure_future(_until_eof(reader))  # the stream runs until it closes
        getter: asyncio.Future[Delivery] | None = None
        try:
            writer.write(ok)
            await writer.drain()
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    return
                message = getter.result()
                if isinstance(message, StreamEnd):
                    return
                writer.write(encode_line(message))
                await writer.drain()
        finally:
            # Also when this task is cancelled (the daemon stopping) while it waits: a helper
            # task left pending is destroyed with a warning on stderr, outside the JSON log.
            self._hub.unsubscribe(queue)
            helpers = [h for h in (closed, getter) if h is not None]
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)


class _ReadDeadline:
    """Cancels a connection's task when its read is still waiting at the deadline.

    One timer per connection, moved lazily: a request pushes the idle deadline later, which
    costs nothing until the timer fires, finds the deadline moved and re-arms; only an earlier
    deadline (a partial line's) re-arms at once. asyncio.wait_for made a Task, a future and a
    timer for every read, and three trips through the event loop instead of one.
    """

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self._task = task
        self._loop = task.get_loop()
        self._at = math.inf  # loop time; infinite while no read is waiting
        self._timer: asyncio.TimerHandle | None = None
        self.expired = False

    def arm(self, at: float) -> None:
        self._at = at
        timer = self._timer
        if timer is None or at < timer.when():
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(at, self._fire)

    def disarm(self) -> None:
        self._at = math.inf

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        if self._loop.time() >= self._at:
            self.expired = True
            self._task.cancel()
        elif self._at != math.inf:
            self._timer = self._loop.call_at(self._at, self._fire)


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Read and drop whatever a `watch` client sends, until it closes the connection."""
    while await reader.read(READ_CHUNK):
        pass
