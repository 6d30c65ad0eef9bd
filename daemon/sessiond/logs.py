"""Structured event logging: one line per event an operator would alert or graph on.

Every call names a stable `event` and its fields (docs/logging.md lists them). The formatter
decides the shape: journald fields (auto, when stderr is systemd's stream to the journal), JSON
lines (auto elsewhere off a terminal), or text for people.
Secrets never reach here: callers pass redacted values, and `redact()` helps them.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

LOGGER_NAME = "sessiond"
_logger = logging.getLogger(LOGGER_NAME)


def log_event(
    event: str, level: int = logging.INFO, *, exc_info: bool = False, **fields: Any
) -> None:
    """Log `event` with `fields` (and the current traceback with `exc_info`); never raises,
    whatever the fields hold."""
    try:
        _logger.log(
            level,
            event,
            exc_info=exc_info,
            extra={"event_fields": fields, "event_name": event},
            stacklevel=2,
        )
    except Exception:  # logging must never take the daemon down
        pass


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    return getattr(record, "event_fields", None) or {}


def _event_name(record: logging.LogRecord) -> str:
    return getattr(record, "event_name", None) or "log"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, event, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "event": _event_name(record),
        }
        if not hasattr(record, "event_name"):
            body["message"] = record.getMessage()
        body.update(_fields(record))
        if record.exc_info:
            body["traceback"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level event key=value ...` for people."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        parts = [stamp, record.levelname.lower(), _event_name(record)]
        if not hasattr(record, "event_name"):
            parts.append(record.getMessage())
        parts += [f"{k}={v}" for k, v in _fields(record).items()]
        text = " ".join(str(p) for p in parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure(log_format: str = "auto", level: str = "info") -> str:
    """Route sessiond's logs to stderr in `log_format`; return the format chosen."""
    from sessiond import systemd

    chosen = log_format
    if chosen == "auto":
        if systemd.stderr_is_journal() and systemd.journal_available():
            chosen = "journal"  # stderr is systemd's stream to the journal: use real fields
        else:
            chosen = "text" if sys.stderr.isatty() else "json"
    handler: logging.Handler
    if chosen == "journal":
        handler = systemd.journal_handler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    root = logging.getLogger(LOGGER_NAME)
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    root.propagate = False
    # Library loggers (watchdog, botocore) go to the same place, quieter.
    for name in ("watchdog", "botocore", "boto3", "urllib3", "s3transfer"):
        lib = logging.getLogger(name)
        lib.handlers[:] = [handler]
        lib.setLevel(logging.WARNING)
        lib.propagate = False
    return chosen


def set_level(level: str) -> None:
    logging.getLogger(LOGGER_NAME).setLevel(getattr(logging, level.upper(), logging.INFO))


def redact(value: str | None, keep: int = 4) -> str | None:
    """Show only the first `keep` characters of an identifier such as an access key."""
    if not value:
        return value
    return value[:keep] + "…" if len(value) > keep else "…"
