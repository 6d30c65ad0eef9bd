"""Everything that knows about systemd: journald log fields and readiness notifications.

systemd-python is optional (the `systemd` extra); without it journald output is unavailable
and notifications are written to `NOTIFY_SOCKET` directly, which is the same datagram.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from sessiond.logs import _event_name, _fields


class _JournalFields(logging.Filter):
    """Turns an event's fields into journal fields (`EVENT=`, `SESSION_ID=`, ...)."""

    def filter(self, record: logging.LogRecord) -> bool:
        extra: dict[str, Any] = {"EVENT": _event_name(record)}
        for key, value in _fields(record).items():
            extra[key.upper()] = value
        record.__dict__.update(extra)
        return True


def journal_handler() -> logging.Handler:
    try:
        from systemd.journal import JournalHandler
    except ImportError as exc:
        raise RuntimeError("--log-format journal needs the systemd extra") from exc
    handler = JournalHandler(SYSLOG_IDENTIFIER="sessiond")
    handler.addFilter(_JournalFields())
    return handler


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1") to the service manager; false when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True
