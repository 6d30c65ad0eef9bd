"""journald: the handler that writes each log record as a journal entry with fields, and the
test of whether stderr is systemd's stream to the journal.

It needs systemd-python (the `systemd` extra, `systemd.journal.send`); without it journald
output is unavailable, and logs stay JSON lines on stderr, which journald stores as text.

Journal fields of an event (docs/logging.md, "Where the lines go"): `MESSAGE` (readable:
`event: key=value ...`), `PRIORITY` (syslog level from the log level), `EVENT` (the stable
event name), `SYSLOG_IDENTIFIER=sessiond`, `LOGGER`, then each of the event's fields
upper-cased (`session_id` -> `SESSION_ID`), and `TRACEBACK` when there is one.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from sessiond.logs import event_fields, event_name, is_event

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
    event = event_name(record)
    pairs = [(key, value) for key, value in event_fields(record).items() if value is not None]
    if is_event(record):
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
