"""A client on a bare socket, for tests that need to see what the daemon does to a connection."""

from __future__ import annotations

import json
import socket
from typing import Any

PING = b'{"op":"ping"}\n'


def read_reply(sock: socket.socket) -> dict[str, Any] | None:
    """The next reply line, or None when the daemon closed the connection instead."""
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return None
        data += chunk
    answer = json.loads(data)
    assert isinstance(answer, dict)
    return answer


def closed(sock: socket.socket) -> bool:
    """True once the daemon has closed the connection (waits up to the socket's timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
