"""A `NOTIFY_SOCKET` of the test's own: the datagram socket systemd would listen on, so a test
sees exactly what sessiond tells the service manager (READY=1, STATUS=, WATCHDOG=1, ...)."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable

Message = dict[str, str]


def short_tmp_dir() -> str:
    """A private folder under /tmp: Unix socket paths must stay under 108 bytes, and pytest's
    tmp_path can be longer than that."""
    return tempfile.mkdtemp(prefix="sd-", dir="/tmp")


def parse(datagram: bytes) -> Message:
    message: Message = {}
    for line in datagram.decode().splitlines():
        key, _, value = line.partition("=")
        message[key] = value
    return message


class NotifySocket:
    def __init__(self, path: str) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(path)
        self.messages: list[Message] = []
        self._seen = 0  # messages[:_seen] were already offered to a waiter

    def close(self) -> None:
        self._sock.close()
        if not self.path.startswith("\0"):  # an abstract socket has no file
            os.unlink(self.path)

    def _receive(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self._sock.settimeout(remaining)
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            return False
        self.messages.append(parse(data))
        return True

    def wait_for(self, match: Callable[[Message], bool], timeout: float = 15.0) -> Message:
        """The first message from here on that `match`es; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            while self._seen < len(self.messages):
                message = self.messages[self._seen]
                self._seen += 1
                if match(message):
                    return message
            if not self._receive(deadline):
                raise AssertionError(f"no matching notification in {timeout}s: {self.messages}")

    def wait_key(self, key: str, value: str | None = None, timeout: float = 15.0) -> Message:
        return self.wait_for(
            lambda m: key in m and (value is None or m[key] == value), timeout=timeout
        )

    def collect(self, seconds: float) -> list[Message]:
        """Everything that arrives within the next `seconds` (a window, for "none arrives")."""
        deadline = time.monotonic() + seconds
        start = len(self.messages)
        while self._receive(deadline):
            pass
        self._seen = len(self.messages)
        return self.messages[start:]

    def drain(self) -> None:
        """Mark everything received so far as seen."""
        self._seen = len(self.messages)
