"""Telling the service manager how sessiond is doing (sd_notify): ready, reloading, stopping,
the status line, and watchdog pings.

A `Notification` is one datagram's worth of state; `Notifier` sends it to `$NOTIFY_SOCKET`,
through `systemd.daemon.notify` (sd_notify) when systemd-python is installed, and as the same
datagram written directly otherwise. Without `NOTIFY_SOCKET` (not under a `Type=notify` unit)
every send is a no-op that returns False. docs/systemd.md, "The units".
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


@dataclass(frozen=True)
class Notification:
    """The state one datagram reports. Lines go out in a fixed order: the lifecycle change
    first, then `STATUS=`, then `WATCHDOG=1`."""

    ready: bool = False
    reloading: bool = False
    stopping: bool = False
    status: str | None = None
    watchdog: bool = False
    monotonic_usec: int | None = None  # systemd wants it with RELOADING=1

    def text(self) -> str:
        lines = []
        if self.ready:
            lines.append("READY=1")
        if self.reloading:
            lines.append("RELOADING=1")
        if self.monotonic_usec is not None:
            lines.append(f"MONOTONIC_USEC={self.monotonic_usec}")
        if self.stopping:
            lines.append("STOPPING=1")
        if self.status is not None:
            # One line per assignment: a newline would start a new (bogus) one.
            lines.append("STATUS=" + " ".join(self.status.splitlines()))
        if self.watchdog:
            lines.append("WATCHDOG=1")
        return "\n".join(lines)


def send_datagram(address: str, text: str) -> bool:
    """`text` as one datagram to the socket at `address` (`@name`: an abstract socket), the
    way sd_notify sends it; False when it cannot be sent."""
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(text.encode())
    except OSError:
        return False
    return True


class Notifier:
    """Sends notifications to the service manager's socket; a no-op without one. Safe to call
    from any thread: each send is one datagram on a socket of its own."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        return cls((os.environ if env is None else env).get(NOTIFY_SOCKET_ENV))

    @property
    def active(self) -> bool:
        """True under a service manager that listens for notifications."""
        return self.address is not None

    def send(self, notification: Notification) -> bool:
        """Send `notification`; False when not under systemd or when it could not be sent. A
        notification never raises: it must not take the daemon down."""
        text = notification.text()
        if self.address is None or not text:
            return False
        if self.address == os.environ.get(NOTIFY_SOCKET_ENV):  # sd_notify reads it there
            try:
                from systemd import daemon as sd_daemon
            except ImportError:
                pass
            else:
                try:
                    return bool(sd_daemon.notify(text))
                except Exception:
                    return False
        return send_datagram(self.address, text)

    def ready(self, status: str | None = None) -> bool:
        return self.send(Notification(ready=True, status=status))

    def reloading(self) -> bool:
        """`RELOADING=1` with the `MONOTONIC_USEC=` that systemd asks to come with it."""
        return self.send(Notification(reloading=True, monotonic_usec=time.monotonic_ns() // 1000))

    def stopping(self, status: str | None = None) -> bool:
        return self.send(Notification(stopping=True, status=status))

    def status(self, text: str) -> bool:
        return self.send(Notification(status=text))

    def watchdog(self, status: str | None = None) -> bool:
        """`WATCHDOG=1` (sessiond is alive and healthy), with the status line if it changed."""
        return self.send(Notification(status=status, watchdog=True))
