"""A recording TCP proxy in front of the test S3 server: it counts every byte a client sends
(requests and their bodies, headers included) and can be stopped and started again on the same
port, cutting every open connection, to make an outage in the middle of an upload.

    proxy = RecordingProxy(server.port)
    proxy.start()            # clients use proxy.endpoint
    before = proxy.sent
    ...
    proxy.sent - before      # bytes the server received through the proxy meanwhile
"""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.support.s3server import free_port

_CHUNK = 1 << 16


class RecordingProxy:
    def __init__(self, upstream_port: int, port: int | None = None) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._sent = 0
        self._requests = 0
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()

    @property
    def sent(self) -> int:
        """Bytes clients sent to the server through the proxy, in total."""
        with self._lock:
            return self._sent

    @property
    def connections(self) -> int:
        with self._lock:
            return self._requests

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones (an outage)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
                self._requests += 1
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, count: bool) -> None:
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    break
                if count:
                    with self._lock:
                        self._sent += len(data)
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(target)
            with contextlib.suppress(OSError):
                source.close()

    def __enter__(self) -> RecordingProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
