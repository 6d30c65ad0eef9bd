"""One upload attempt for one session: locate, read, compare with the ledger, upload; and the
log line and watch event that tell of its outcome.

Runs on a worker thread without the sink's lock. It never raises for a failure it knows (the
file, the store): each ends as an Outcome the uploader counts and schedules from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sessionctl.protocol import Event

from sessiond.logs import log_event
from sessiond.sink import s3
from sessiond.sink.config import SinkConfig
from sessiond.sink.errors import UNREADABLE, SinkError, classify
from sessiond.sink.history import UnreadableSession, read_history
from sessiond.sink.ledger import Ledger, LedgerEntry
from sessiond.sink.schedule import FAILED, GONE, UNCHANGED, UPLOADED


@dataclass(frozen=True)
class Outcome:
    how: str  # schedule.UPLOADED, UNCHANGED, GONE or FAILED
    bytes: int = 0
    duration_ms: int = 0
    multipart: bool = False
    error: SinkError | None = None
    retry: bool = True  # False: only the next save can help (a torn file)


def safe_locate(locate: Callable[[str], str | None], session_id: str) -> str | None:
    try:
        return locate(session_id)
    except Exception as exc:  # the index's trouble must not stop the worker
        log_event("sink_error", logging.ERROR, where="locate", error=type(exc).__name__)
        return None


def run_attempt(
    session_id: str,
    locate: Callable[[str], str | None],
    ledger: Ledger,
    client: Any,
    config: SinkConfig,
) -> Outcome:
    path = safe_locate(locate, session_id)
    if path is None:
        ledger.forget([session_id])
        return Outcome(GONE)
    try:
        history = read_history(path)
    except FileNotFoundError:
        return Outcome(GONE)  # deleted since locate; the index says so next
    except UnreadableSession as exc:
        message = f"{path} is not a whole session ({exc}); waiting for its next save"
        return Outcome(FAILED, error=SinkError(UNREADABLE, message), retry=False)
    except OSError as exc:
        message = f"cannot read {path}: {exc.strerror or type(exc).__name__}"
        return Outcome(FAILED, error=SinkError(UNREADABLE, message))
    st = history.stat
    record = LedgerEntry(
        history.fingerprint, len(history.body), st.ino, st.size, st.mtime_ns, time.time()
    )
    previous = ledger.get(session_id)
    if previous is not None and previous.fp == history.fingerprint:
        ledger.record(session_id, record)  # same body; remember the newer file
        return Outcome(UNCHANGED)
    started = time.monotonic()
    try:
        put = s3.put_history(client, config, config.object_key(session_id), history.body)
    except Exception as exc:
        return Outcome(FAILED, error=classify(exc, config))
    ledger.record(session_id, record)
    duration_ms = round((time.monotonic() - started) * 1000)
    return Outcome(UPLOADED, len(history.body), duration_ms, put.multipart)


def report(
    session_id: str,
    attempt: int,
    outcome: Outcome,
    message: str | None,
    retry_in: float | None,
    held: int | None,
    emit: Callable[[str, dict[str, Any]], None],
) -> None:
    """Log and emit `upload_done` / `upload_failed`.

    `message` is the scrubbed error; `held` is None when the rate limit holds this log line
    back (watch clients still get the event), else how many lines were held before it.
    """
    error = outcome.error
    if outcome.how == UPLOADED:
        fields: dict[str, Any] = {"bytes": outcome.bytes, "duration_ms": outcome.duration_ms}
        fields["attempt"] = attempt
        log_event("upload_done", session_id=session_id, multipart=outcome.multipart, **fields)
        _send(emit, Event.UPLOAD_DONE, {"session_id": session_id, **fields})
    elif error is not None:
        retry_s = None if retry_in is None else round(retry_in, 3)
        fields = {"error": message, "attempt": attempt, "retry_in_s": retry_s}
        if held is not None:
            level = logging.ERROR if error.setup else logging.WARNING
            log_event(
                "upload_failed",
                level,
                session_id=session_id,
                kind=error.kind,
                suppressed=held,
                **fields,
            )
        _send(emit, Event.UPLOAD_FAILED, {"session_id": session_id, "kind": error.kind, **fields})


def _send(emit: Callable[[str, dict[str, Any]], None], event: str, fields: dict[str, Any]) -> None:
    try:
        emit(str(event), fields)
    except Exception as exc:  # a watch client's trouble is not the sink's
        log_event("sink_error", logging.ERROR, where="emit", error=type(exc).__name__)
