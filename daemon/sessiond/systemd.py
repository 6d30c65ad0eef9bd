"""Everything that knows about systemd: notifications, the watchdog, and journald log fields.

systemd-python is optional (the `systemd` extra). With it, notifications go through
`systemd.daemon.notify` (sd_notify) and logs through `systemd.journal.send`; without it,
notifications are written to `NOTIFY_SOCKET` directly (the same datagram) and journald output
is unavailable, so logs stay JSON lines on stderr, which journald stores as text.

Journal fields of an event (docs/logging.md): `MESSAGE` (readable: `event: key=value ...`),
`PRIORITY` (syslog level from the log level), `EVENT` (the stable event name),
`SYSLOG_IDENTIFIER=sessiond`, `LOGGER`, then each of the event's fields upper-cased
(`session_id` -> `SESSION_ID`), and `TRACEBACK` when there is one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from sessiond.logs import _event_name, _fields

IDENTIFIER = "sessiond"
_PRIORITIES = (  # (lowest Python level, syslog priority), highest first
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)
_RESERVED = frozenset(
    [
        "MESSAGE",
        "PRIORITY",
        "EVENT",
        "SYSLOG_IDENTIFIER",
        "LOGGER",
        "TRACEBACK",
        "MESSAGE_ID",
        "CODE_FILE",
        "CODE_LINE",
        "CODE_FUNC",
    ]
)
_INVALID_NAME_CHARS = re.compile(r"[^A-Z0-9_]")

JournalSender = Callable[..., Any]  # systemd.journal.send's signature: (MESSAGE, **fields)


# --- notifications --------------------------------------------------------------------------


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1") to the service manager; false when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    try:
        from systemd import daemon as sd_daemon
    except ImportError:
        return _notify_datagram(address, state)
    try:
        return bool(sd_daemon.notify(state))
    except Exception:  # a notification must never take the daemon down
        return False


def _notify_datagram(address: str, state: str) -> bool:
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def notify_reloading() -> bool:
    """`RELOADING=1` with the `MONOTONIC_USEC=` that systemd asks to come with it."""
    return notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between `WATCHDOG=1` pings, half of `WATCHDOG_USEC` (sd_watchdog_enabled), or
    None when the service manager asked for no watchdog (or asked another process)."""
    env = os.environ if env is None else env
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


# --- journald -------------------------------------------------------------------------------


def stderr_is_journal(env: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """True when `fd` is the stream systemd connected to the journal: `JOURNAL_STREAM` holds
    its `device:inode`, and a redirected stderr no longer matches."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return st.st_dev == device and st.st_ino == inode


def journal_available() -> bool:
    try:
        from systemd import journal  # noqa: F401
    except ImportError:
        return False
    return True


def syslog_priority(levelno: int) -> int:
    for level, priority in _PRIORITIES:
        if levelno >= level:
            return priority
    return 7  # debug


def field_name(key: str) -> str:
    """A journal field name for an event field: upper-case letters, digits and `_`, not
    starting with `_` or a digit, at most 64 characters, never one of the standard fields."""
    name = _INVALID_NAME_CHARS.sub("_", key.upper()).lstrip("_") or "FIELD"
    if name[0].isdigit() or name in _RESERVED:
        name = "FIELD_" + name
    return name[:64]


def field_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, default=str, ensure_ascii=False)


def journal_fields(record: logging.LogRecord, traceback: str | None = None) -> dict[str, str]:
    """The journal entry for one log record, `MESSAGE` included (the mapping of the docstring)."""
    event = _event_name(record)
    pairs = [(key, value) for key, value in _fields(record).items() if value is not None]
    if hasattr(record, "event_name"):
        message = event + (": " if pairs else "")
        message += " ".join(f"{key}={field_value(value)}" for key, value in pairs)
    else:
        message = record.getMessage()
    entry = {
        "MESSAGE": message,
        "PRIORITY": str(syslog_priority(record.levelno)),
        "EVENT": event,
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "LOGGER": record.name,
    }
    for key, value in pairs:
        entry[field_name(key)] = field_value(value)
    if traceback:
        entry["TRACEBACK"] = traceback
        entry["MESSAGE"] += "\n" + traceback
    return entry


class JournalHandler(logging.Handler):
    """Sends each record to the journal as `journal_fields` maps it. `sender` has the
    signature of `systemd.journal.send`, which is the default."""

    def __init__(self, sender: JournalSender | None = None) -> None:
        super().__init__()
        if sender is None:
            try:
                from systemd.journal import send
            except ImportError as exc:
                raise RuntimeError(
                    "--log-format journal needs systemd-python: install sessiond with the "
                    "`systemd` extra (it builds against libsystemd-dev)"
                ) from exc
            sender = send
        self._send: JournalSender = sender

    def emit(self, record: logging.LogRecord) -> None:
        try:
            traceback = record.exc_text  # set, and redacted, by logs.RedactingFilter
            if record.exc_info:
                formatter = self.formatter or logging.Formatter()
                traceback = formatter.formatException(record.exc_info)
            entry = journal_fields(record, traceback)
            message = entry.pop("MESSAGE")
            self._send(
                message,
                CODE_FILE=record.pathname,
                CODE_LINE=record.lineno,
                CODE_FUNC=record.funcName,
                **entry,
            )
        except Exception:
            self.handleError(record)


def journal_handler() -> logging.Handler:
    return JournalHandler()
