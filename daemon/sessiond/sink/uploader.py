"""HistorySink: keeps each session's history object in S3 equal to its file (README, "The
history sink (S3)").

Threads: `concurrency` workers share one Schedule under one lock; no I/O is done while holding
it, so `notify` (called from the watcher) never waits on the network. A worker takes the session
due first and runs one attempt (attempt.py); this module counts, logs and reschedules.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from enum import Enum
from typing import TYPE_CHECKING, Any

from sessionctl.agent import is_valid_session_id

from sessiond.logs import log_event
from sessiond.sink import s3
from sessiond.sink.attempt import Outcome, report, run_attempt
from sessiond.sink.config import SinkConfig
from sessiond.sink.errors import FailureKind, Pass, RateLimiter, Scrubber, SinkError
from sessiond.sink.faults import NO_FAULTS, Faults
from sessiond.sink.ledger import Ledger
from sessiond.sink.reports import FlushResult, SinkStatus, UploadReport
from sessiond.sink.schedule import Attempt, Result, Schedule
from sessiond.sink.source import FileSource, HistorySource
from sessiond.sink.verify import VERIFY_BATCH, VERIFY_RATE, StoreCheck

if TYPE_CHECKING:
    from sessiond.remote.parts import RemoteParts

PERSIST_INTERVAL_S = 1.0  # the ledger is written at most this often (losing it costs re-uploads)
_LOG_INTERVAL_S = 30.0  # at most one failure line per kind per interval...
_SETUP_LOG_INTERVAL_S = 600.0  # ...and one per ten minutes for a setup problem (keys, bucket)


class _Chore(Enum):
    """Work for a worker that is not an upload attempt."""

    PERSIST = "persist"  # write the ledgers


# Rate-limiter topics of log lines that are not an upload failure (errors.RateLimiter).
_LEDGER_TOPIC = "ledger"
_RETRY_TOPIC = "retrying"


class HistorySink:
    def __init__(
        self,
        config: SinkConfig,
        locate: Callable[[str], str | None],
        state_dir: str,
        emit: Callable[[UploadReport], None] = lambda report: None,
        *,
        source: HistorySource | None = None,
        faults: Faults = NO_FAULTS,
        verify_rate: float = VERIFY_RATE,
        verify_batch: int = VERIFY_BATCH,
        remote: RemoteParts | None = None,
    ) -> None:
        """`locate` finds a session's JSON file; `source`, when given, replaces it as the way
        to a session's history (source.py)."""
        self._config = config
        self._source: HistorySource = source if source is not None else FileSource(locate)
        self._faults = faults
        self._verify = (verify_rate, verify_batch)
        self._check: StoreCheck | None = None
        self._remote = remote  # what rebuilds a session beside its history (docs/remote.md)
        self._parts_sent = 0
        self._emit = emit
        target = f"{config.endpoint_display}|{config.bucket}|{config.prefix}"
        self._ledger = Ledger(state_dir, target)
        self._schedule = Schedule(
            config.debounce_s, config.max_delay_s, config.backoff_base_s, config.backoff_max_s
        )
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._client: Any = None
        self._scrub = Scrubber(config.secret_key, config.access_key)
        self._limiter = RateLimiter(_LOG_INTERVAL_S, _SETUP_LOG_INTERVAL_S)
        self._started = self._stopping = self._closed = False
        self._stop_deadline = math.inf
        self._persisting = False
        self._reporting = 0  # outcomes recorded but not yet logged and emitted
        self._last_persist = 0.0
        self._uploaded = self._failed = self._unchanged = self._bytes = 0
        self._delta = self._whole = self._sent = self._fallbacks = 0
        self._last_error: str | None = None
        self._last_error_at: float | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, known_ids: Iterable[str]) -> None:
        """Queue every known session whose file differs from its last upload; start workers."""
        with self._cond:
            if self._started:
                return
            self._started = True
        self._ledger.load()
        self._client = s3.make_client(self._config)
        known_ids = list(known_ids)
        if self._remote is not None:
            self._remote.start(self._client, set(known_ids))
        queued = 0
        unchanged: list[str] = []
        for session_id in known_ids:
            if self._differs(session_id):
                with self._cond:
                    self._schedule.change(session_id, time.monotonic(), immediate=True)
                queued += 1
            elif is_valid_session_id(session_id):
                unchanged.append(session_id)
        self._persist()  # replaces a corrupt or foreign ledger at once
        self._check = StoreCheck(
            self._client,
            self._config,
            self._ledger,
            self._replaced,
            lambda: self._stopping,
            *self._verify,
        )
        self._check.start(unchanged)  # do the objects still hold what the ledger says?
        for number in range(self._config.concurrency):
            thread = threading.Thread(
                target=self._work, name=f"sessiond-sink-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        log_event(
            "sink_started",
            endpoint=self._config.endpoint_display,
            bucket=self._config.bucket,
            prefix=self._config.prefix,
            queued=queued,
            ledger_entries=len(self._ledger),
            concurrency=self._config.concurrency,
        )

    def _differs(self, session_id: str) -> bool:
        """Cheap start-up test: a file still as it was at its last upload is not read again."""
        if not is_valid_session_id(session_id):
            return False
        if self._source.where(session_id) is None:
            return False
        entry, stat = self._ledger.get(session_id), self._source.version(session_id)
        if entry is None or stat is None:
            return True
        if self._remote is not None and self._remote.needs(session_id, stat):
            return True
        return not stat.same_file(entry.ino, entry.size, entry.mtime_ns)

    def _replaced(self, session_id: str) -> None:
        """The check found the object not as sessiond left it: upload it again, now."""
        with self._cond:
            if not self._stopping:
                self._schedule.change(session_id, time.monotonic(), immediate=True)
                self._cond.notify()

    def stop(self, deadline_s: float | None = None) -> None:
        """Finish what is in flight and try what is pending until the deadline; then persist.

        What is left is the ledger's difference from the files, picked up by the next start.
        """
        deadline_s = self._config.stop_deadline_s if deadline_s is None else deadline_s
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            self._stop_deadline = time.monotonic() + max(0.0, deadline_s)
            self._schedule.kick(time.monotonic(), final=True)
            self._cond.notify_all()
        if self._check is not None:
            self._check.wake()
        for thread in self._threads:
            thread.join(max(0.0, self._stop_deadline - time.monotonic()))
        with self._cond:
            self._closed = True
            counts = self._schedule.counts()
            self._cond.notify_all()
        if self._remote is not None:
            self._remote.catalog.stop(max(0.5, self._stop_deadline - time.monotonic()))
        for ledger in self._ledgers():
            try:
                ledger.close()
            except OSError as exc:
                log_event("ledger_write_failed", logging.ERROR, path=ledger.path, error=str(exc))
        log_event(
            "sink_stopped",
            pending_left=counts.pending + counts.in_flight,
            uploaded=self._uploaded,
            delta_uploads=self._delta,
            bytes_sent=self._sent,
            failed=self._failed,
        )

    # --- the daemon's calls ---------------------------------------------------------------

    def notify(self, session_id: str) -> None:
        """A session's file changed. Never blocks on I/O, never raises."""
        try:
            if not is_valid_session_id(session_id):
                return
            with self._cond:
                if self._stopping:
                    return  # the ledger difference carries it to the next start
                self._schedule.change(session_id, time.monotonic())
                self._cond.notify()
        except Exception as exc:  # never take the watcher down
            log_event("sink_error", logging.ERROR, where="notify", error=type(exc).__name__)

    def flush(self, timeout: float) -> FlushResult:
        """Block until every change notified before the call is uploaded or has failed.

        The check at start comes first: until an object is known to be what the ledger says,
        its session is not reported as uploaded (it counts as failed, or pending at a timeout).
        """
        deadline = time.monotonic() + max(0.0, timeout)
        check = self._check
        checked = check is None or check.done.wait(max(0.0, deadline - time.monotonic()))
        with self._cond:
            snapshot = self._schedule.snapshot()
            epoch = self._schedule.kick(time.monotonic())
            self._cond.notify_all()
            while True:
                progress = self._schedule.progress(snapshot, epoch)
                remaining = deadline - time.monotonic()
                done = progress.pending == 0 and self._reporting == 0
                if done or remaining <= 0 or self._closed or not self._started:
                    break
                self._cond.wait(remaining)
        self._persist()  # what flush reports as uploaded survives a kill right after it
        unverified = 0 if check is None else check.unverified
        pending = progress.pending + (0 if checked else unverified)
        failed = progress.failed + (unverified if checked else 0)
        written: bool | None = None
        if self._remote is not None:  # the catalog names what was just uploaded
            written = self._remote.catalog.flush(max(0.0, deadline - time.monotonic()))
            if not written:
                failed = max(failed, 1)  # not restorable elsewhere yet: not "all uploaded"
        return FlushResult(progress.uploaded, failed, pending, catalog_written=written)

    def status(self) -> SinkStatus:
        with self._cond:
            counts = self._schedule.counts()
            return SinkStatus(
                pending=counts.pending,
                in_flight=counts.in_flight,
                retrying=counts.retrying,
                uploaded=self._uploaded,
                failed=self._failed,
                unchanged=self._unchanged,
                bytes_uploaded=self._bytes,
                delta_uploads=self._delta,
                whole_uploads=self._whole,
                bytes_sent=self._sent,
                delta_fallbacks=self._fallbacks,
                replaced=0 if self._check is None else self._check.replaced,
                unverified=0 if self._check is None else self._check.unverified,
                last_error=self._last_error,
                last_error_at=self._last_error_at,
                endpoint=self._config.endpoint_display,
                bucket=self._config.bucket,
                prefix=self._config.prefix,
                remote=None if self._remote is None else self._remote.status(),
            )

    def check(self) -> list[str]:
        return s3.check(self._config)

    # --- workers --------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._take()
            if job is None:
                return
            if job is _Chore.PERSIST:
                self._persist()
            else:
                self._run(job)

    def _take(self) -> Attempt | _Chore | None:
        with self._cond:
            while True:
                now = time.monotonic()
                if self._closed:
                    return None
                if self._stopping and (
                    now >= self._stop_deadline
                    or not self._schedule.has_due_before(self._stop_deadline)
                ):
                    return None
                session_id, wait = self._schedule.next_due(now)
                if session_id is not None and wait <= 0:
                    return self._schedule.begin(session_id)
                until_persist = self._last_persist + PERSIST_INTERVAL_S - now
                if any(ledger.dirty for ledger in self._ledgers()) and not self._persisting:
                    if until_persist <= 0:
                        self._persisting = True
                        return _Chore.PERSIST
                    wait = min(wait, until_persist)
                if self._stopping:
                    wait = min(wait, self._stop_deadline - now)
                self._cond.wait(None if math.isinf(wait) else max(wait, 0.001))

    def _ledgers(self) -> list[Ledger]:
        return [self._ledger] + ([self._remote.ledger] if self._remote is not None else [])

    def _persist(self) -> None:
        try:
            for ledger in self._ledgers():
                try:
                    ledger.persist()
                except OSError as exc:
                    with self._cond:
                        logged = self._limiter.allow(_LEDGER_TOPIC)
                    if logged.let_through:
                        log_event(
                            "ledger_write_failed", logging.ERROR, path=ledger.path, error=str(exc)
                        )
        finally:
            with self._cond:
                self._persisting = False
                self._last_persist = time.monotonic()
                self._cond.notify_all()  # records made meanwhile need another write later

    def _run(self, attempt: Attempt) -> None:
        if attempt.number > 1:
            with self._cond:
                logged = self._limiter.allow(_RETRY_TOPIC)
            if logged.let_through:
                log_event("upload_retrying", session_id=attempt.session_id, attempt=attempt.number)
        try:
            outcome = run_attempt(
                attempt.session_id,
                self._source,
                self._ledger,
                self._client,
                self._config,
                self._faults,
                self._remote,
            )
        except Exception as exc:  # a bug must not kill the worker
            error = SinkError(FailureKind.INTERNAL, f"internal error: {type(exc).__name__}")
            outcome = Outcome(Result.FAILED, error=error)
        self._finish(attempt, outcome)

    def _finish(self, attempt: Attempt, outcome: Outcome) -> None:
        retry_in: float | None = None
        logged = Pass(let_through=False, held_back=0)  # a failure's log line, rate-limited
        error = outcome.error
        message = self._scrub(error.message) if error is not None else None
        with self._cond:
            now = time.monotonic()
            self._fallbacks += outcome.fallback is not None
            if error is None:
                self._schedule.succeed(attempt, outcome.how, now)
                if outcome.how is Result.UPLOADED:
                    self._uploaded += 1
                    self._bytes += outcome.bytes
                    self._sent += outcome.sent
                    if outcome.delta:
                        self._delta += 1
                    else:
                        self._whole += 1
                    self._last_error = None
                    self._limiter.reset()
                elif outcome.how is Result.UNCHANGED:
                    self._unchanged += 1
            else:
                retry_in = self._schedule.fail(attempt, now, retry=outcome.retry)
                self._failed += 1
                self._last_error, self._last_error_at = message, time.time()
                logged = self._limiter.allow(error.kind, now)
            self._reporting += 1  # a flush returns only once this is told too
        try:
            report(
                attempt.session_id, attempt.number, outcome, message, retry_in, logged, self._emit
            )
        finally:
            with self._cond:
                self._reporting -= 1
                self._cond.notify_all()
