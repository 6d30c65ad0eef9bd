"""Structured event logging: one line per event an operator would alert or graph on.

Every call names a stable `event` and its fields (docs/logging.md lists them). This module
holds the events, the redaction and the JSON and text formatters; which handler writes them
(journald, JSON lines, text) is chosen in sessiond.logsetup, and the journald handler lives in
sessiond.systemd.journal, which reads a record through `event_name` and `event_fields` here.
Secrets: callers pass redacted values (`redact()` helps them), and every handler also has a
`RedactingFilter`, which takes the user:password part and the query out of every URL in a
line, its fields and its traceback, whoever logged it (botocore's errors quote the endpoint).
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
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


_URL = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)"
    r"(?P<userinfo>[^\s/?#'\"<>]*@)?"  # greedy: a raw `@` in a password is still covered
    r"(?P<rest>[^\s?#'\"<>]*)"
    r"(?P<query>\?[^\s#'\"<>]*)?"
)


def _redacted_url(match: re.Match[str]) -> str:
    userinfo = "***@" if match["userinfo"] else ""
    query = "?***" if match["query"] else ""
    return f"{match['scheme']}{userinfo}{match['rest']}{query}"


def redact_urls(text: str) -> str:
    """`text` with the user:password part and the query of every URL in it replaced by
    `***` (a presigned URL or an endpoint can carry credentials in either)."""
    return _URL.sub(_redacted_url, text) if "://" in text else text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_urls(value)
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    return value


class RedactingFilter(logging.Filter):
    """Redacts URLs (`redact_urls`) in a record's message, fields and traceback before any
    formatter sees it. The traceback is formatted here, once, into `exc_text`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            fields = getattr(record, "event_fields", None)
            if fields:
                record.event_fields = _redact_value(fields)
            if record.args:
                record.msg, record.args = redact_urls(record.getMessage()), None
            elif isinstance(record.msg, str):
                record.msg = redact_urls(record.msg)
            if record.exc_info and record.exc_info[0] is not None:
                text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
                record.exc_text, record.exc_info = redact_urls(text), None
            elif record.exc_text:
                record.exc_text = redact_urls(record.exc_text)
            if record.stack_info:
                record.stack_info = redact_urls(record.stack_info)
        except Exception:  # a record we cannot redact is dropped, not logged as it is
            return False
        return True


def _traceback(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return record.exc_text or None


def event_fields(record: logging.LogRecord) -> Mapping[str, Any]:
    """The fields `log_event` gave a record; empty for a library's record."""
    return getattr(record, "event_fields", None) or {}


def event_name(record: logging.LogRecord) -> str:
    """The event a record stands for; `log` for a library's record, which has none."""
    return getattr(record, "event_name", None) or "log"


def is_event(record: logging.LogRecord) -> bool:
    """True for a record of `log_event`; false for a plain message (a library's record), whose
    text is its message."""
    return hasattr(record, "event_name")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, event, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "event": event_name(record),
        }
        if not is_event(record):
            body["message"] = record.getMessage()
        body.update(event_fields(record))
        if (trace := _traceback(self, record)) is not None:
            body["traceback"] = trace
        return json.dumps(body, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level event key=value ...` for people."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        parts = [stamp, record.levelname.lower(), event_name(record)]
        if not is_event(record):
            parts.append(record.getMessage())
        parts += [f"{k}={v}" for k, v in event_fields(record).items()]
        text = " ".join(str(p) for p in parts)
        if (trace := _traceback(self, record)) is not None:
            text += "\n" + trace
        return text


def redact(value: str | None, keep: int = 4) -> str | None:
    """Show only the first `keep` characters of an identifier such as an access key."""
    if not value:
        return value
    return value[:keep] + "…" if len(value) > keep else "…"
