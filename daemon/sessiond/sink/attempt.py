"""One upload attempt for one session: read, compare with the ledger, upload (as a delta when
the history only grew, else whole); and the log line and watch event that tell of its outcome.

Runs on a worker thread without the sink's lock. It never raises for a failure it knows (the
file, the store): each ends as an Outcome the uploader counts and schedules from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from sessiond.logs import log_event
from sessiond.sink import s3
from sessiond.sink.config import SinkConfig
from sessiond.sink.delta import DeltaRefused, abort_left_open, eligible, upload_delta
from sessiond.sink.errors import FailureKind, Pass, SinkError, UnexpectedAnswer, classify
from sessiond.sink.faults import NO_FAULTS, Faults
from sessiond.sink.history import History, UnreadableSession
from sessiond.sink.ledger import Ledger, LedgerEntry
from sessiond.sink.reports import UploadDone, UploadFailed, UploadReport
from sessiond.sink.schedule import Result
from sessiond.sink.source import HistorySource, SessionGone

if TYPE_CHECKING:
    from sessiond.remote.parts import Prepared, RemoteParts

# A delta that fails for these reasons would fail whole too: the attempt fails and is retried
# (as a delta again, once the object is checked); any other failure falls back to whole.
_TRANSPORT_KINDS = frozenset({FailureKind.UNREACHABLE, FailureKind.TIMEOUT, FailureKind.SERVER})


@dataclass(frozen=True)
class Outcome:
    how: Result
    bytes: int = 0  # the object's size
    duration_ms: int = 0
    multipart: bool = False
    error: SinkError | None = None
    retry: bool = True  # False: only the next save can help (a torn file)
    delta: bool = False  # sent as a delta (the store copied the unchanged prefix)
    sent: int = 0  # bytes of history sent over the network
    fallback: str | None = None  # why a delta was not possible, when one was tried
    parts_sent: int = 0  # bytes of the session's other parts sent (docs/remote.md)


class _Whole(NamedTuple):
    """A whole upload's result."""

    etag: str
    md5_etags: bool  # the ETag is the MD5 of the bytes (a single PUT)
    multipart: bool


def run_attempt(
    session_id: str,
    source: HistorySource,
    ledger: Ledger,
    client: Any,
    config: SinkConfig,
    faults: Faults = NO_FAULTS,
    parts: RemoteParts | None = None,
) -> Outcome:
    """With `parts`, the session's other parts go up first and its catalog entry after the
    history (remote/parts.py)."""
    where = source.where(session_id)
    if where is None:
        ledger.forget([session_id])
        if parts is not None:
            parts.forget(session_id)
        return Outcome(Result.GONE)
    try:
        history = source.read(session_id)
    except SessionGone:
        return Outcome(Result.GONE)  # deleted since; the index says so next
    except UnreadableSession as exc:
        message = f"{where} is not a whole session ({exc}); waiting for its next save"
        return Outcome(Result.FAILED, error=SinkError(FailureKind.UNREADABLE, message), retry=False)
    except OSError as exc:
        message = f"cannot read {where}: {exc.strerror or type(exc).__name__}"
        return Outcome(Result.FAILED, error=SinkError(FailureKind.UNREADABLE, message))
    prepared: Prepared | None = None
    if parts is not None:
        try:
            prepared = parts.prepare(client, session_id, history)
        except UnreadableSession as exc:
            message = f"{where} is not a whole session ({exc}); waiting for its next save"
            return Outcome(
                Result.FAILED, error=SinkError(FailureKind.UNREADABLE, message), retry=False
            )
        except Exception as exc:
            return Outcome(Result.FAILED, error=classify(exc, config))

    def publish() -> int:
        if parts is None or prepared is None:
            return 0
        parts.publish(session_id, prepared, history.stat)
        return prepared.sent

    previous = ledger.get(session_id)
    extends = (
        config.delta_uploads
        and previous is not None
        and eligible(previous, len(history.body))
        and history.starts_with(previous.bytes, previous.fp)
    )
    if previous is not None and previous.fp == history.fingerprint:
        ledger.record(session_id, _entry(history, previous.etag, previous.md5_etags))
        return Outcome(Result.UNCHANGED, parts_sent=publish())  # same body; remember the newer file
    key = config.object_key(session_id)
    started = time.monotonic()
    fallback: str | None = None
    try:
        abort_left_open(client, config, ledger, key)  # an earlier attempt's, cut short
        if extends:
            assert previous is not None
            try:
                done = upload_delta(
                    client,
                    config,
                    ledger,
                    key,
                    history.body,
                    previous,
                    lambda point: faults.pause(point, session_id),
                )
            except DeltaRefused as exc:
                fallback = str(exc)
            except Exception as exc:
                error = classify(exc, config)
                if error.kind in _TRANSPORT_KINDS:
                    return Outcome(Result.FAILED, error=error)
                fallback = f"a step of the delta failed: {error.message}"
            else:
                ledger.record(session_id, _entry(history, done.etag, done.md5_etags))
                parts_sent = publish()
                return Outcome(
                    Result.UPLOADED,
                    len(history.body),
                    _since(started),
                    multipart=True,
                    delta=True,
                    sent=done.sent,
                    parts_sent=parts_sent,
                )
            log_event("delta_fallback", session_id=session_id, reason=fallback)
        whole = _upload_whole(client, config, key, history)
    except Exception as exc:
        return Outcome(Result.FAILED, error=classify(exc, config), fallback=fallback)
    ledger.record(session_id, _entry(history, whole.etag, whole.md5_etags))
    size = len(history.body)
    return Outcome(
        Result.UPLOADED,
        size,
        _since(started),
        multipart=whole.multipart,
        sent=size,
        fallback=fallback,
        parts_sent=publish(),
    )


def _upload_whole(client: Any, config: SinkConfig, key: str, history: History) -> _Whole:
    """A PUT answered without an ETag is checked with a HEAD."""
    put = s3.put_history(client, config, key, history.body)
    etag = put.etag
    if not etag:
        found = s3.head(client, config, key)
        if found is None or found.size != len(history.body):
            raise UnexpectedAnswer(f"a PUT of {len(history.body)} bytes left {found} in the store")
        etag = found.etag
    md5_etags = not put.multipart and s3.same_etag(etag, history.fingerprint)
    return _Whole(etag, md5_etags, put.multipart)


def _entry(history: History, etag: str, md5_etags: bool) -> LedgerEntry:
    st = history.stat
    return LedgerEntry(
        history.fingerprint,
        len(history.body),
        st.ino,
        st.size,
        st.mtime_ns,
        time.time(),
        etag=etag,
        messages=history.messages,
        md5_etags=md5_etags,
    )


def _since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def report(
    session_id: str,
    attempt: int,
    outcome: Outcome,
    message: str | None,
    retry_in: float | None,
    logged: Pass,
    emit: Callable[[UploadReport], None],
) -> None:
    """Log and emit `upload_done` / `upload_failed`.

    `message` is the scrubbed error; a failure's log line is written only when the rate limit
    lets it through (`logged`; watch clients still get the event).
    """
    error = outcome.error
    if outcome.how is Result.UPLOADED:
        done = UploadDone(session_id, outcome.bytes, outcome.duration_ms, attempt)
        log_event(
            "upload_done",
            session_id=session_id,
            multipart=outcome.multipart,
            delta=outcome.delta,
            sent_bytes=outcome.sent,
            parts_sent_bytes=outcome.parts_sent,
            fallback=outcome.fallback,
            bytes=done.bytes,
            duration_ms=done.duration_ms,
            attempt=done.attempt,
        )
        _send(emit, done)
    elif error is not None:
        retry_s = None if retry_in is None else round(retry_in, 3)
        failed = UploadFailed(session_id, error.kind, message, attempt, retry_s)
        if logged.let_through:
            log_event(
                "upload_failed",
                logging.ERROR if error.setup else logging.WARNING,
                session_id=session_id,
                kind=error.kind.value,
                suppressed=logged.held_back,
                error=failed.error,
                attempt=failed.attempt,
                retry_in_s=failed.retry_in_s,
            )
        _send(emit, failed)


def _send(emit: Callable[[UploadReport], None], upload: UploadReport) -> None:
    try:
        emit(upload)
    except Exception as exc:  # a watch client's trouble is not the sink's
        log_event("sink_error", logging.ERROR, where="emit", error=type(exc).__name__)
