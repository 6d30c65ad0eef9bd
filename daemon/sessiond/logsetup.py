"""Where sessiond's logs go: the handler for `--log-format`, and the levels.

Above both sessiond.logs (the events and their formatters) and sessiond.systemd.journal (the
journald handler), so neither imports the other's set-up. docs/logging.md, "Where the lines go".
"""

from __future__ import annotations

import logging
import sys

from sessiond.config import LogFormat, LogLevel
from sessiond.logs import LOGGER_NAME, JsonFormatter, RedactingFilter, TextFormatter
from sessiond.systemd import journal

# Library loggers (watchdog, botocore) go to the same place, quieter.
LIBRARY_LOGGERS = ("watchdog", "botocore", "boto3", "urllib3", "s3transfer", "asyncio")


def choose_format(log_format: LogFormat) -> LogFormat:
    """`log_format`, or for `auto` the one that suits where stderr goes."""
    if log_format is not LogFormat.AUTO:
        return log_format
    if journal.stderr_is_journal() and journal.journal_available():
        return LogFormat.JOURNAL  # stderr is systemd's stream to the journal: use real fields
    return LogFormat.TEXT if sys.stderr.isatty() else LogFormat.JSON


def configure(
    log_format: LogFormat | str = LogFormat.AUTO, level: LogLevel | str = LogLevel.INFO
) -> LogFormat:
    """Route sessiond's logs to stderr in `log_format`; return the format chosen. Raises
    RuntimeError for `journal` without systemd-python."""
    chosen = choose_format(LogFormat(log_format))
    handler: logging.Handler
    if chosen is LogFormat.JOURNAL:
        handler = journal.JournalHandler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter() if chosen is LogFormat.JSON else TextFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger(LOGGER_NAME)
    root.handlers[:] = [handler]
    set_level(LogLevel(level))
    root.propagate = False
    for name in LIBRARY_LOGGERS:
        lib = logging.getLogger(name)
        lib.handlers[:] = [handler]
        lib.setLevel(logging.WARNING)
        lib.propagate = False
    return chosen


def set_level(level: LogLevel) -> None:
    logging.getLogger(LOGGER_NAME).setLevel(getattr(logging, level.value.upper()))
