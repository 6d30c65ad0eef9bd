"""The check at start: does the store still hold what the ledger says sessiond uploaded?

Another writer (the agent itself, given the same variables) may have replaced an object since.
For each session the ledger knows whose file has not changed (a changed one is uploaded
anyway), a `HeadObject` compares size and ETag; an object that differs or is gone loses its
ledger entry and is uploaded again. HEADs go in small concurrent batches, at most `rate` a
second, so a large ledger does not hammer the store. Uploads sessiond left open (a crash or
an outage between parts) are aborted first.

A HEAD the store does not answer leaves its session unverified; it is tried again after a
backoff, and `flush` counts it as failed meanwhile, never as uploaded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sessiond.logs import log_event
from sessiond.sink import s3
from sessiond.sink.config import SinkConfig
from sessiond.sink.delta import abort_uploads
from sessiond.sink.ledger import Ledger, LedgerEntry, OpenUpload

VERIFY_RATE = 50.0  # HEADs per second at most
VERIFY_BATCH = 8  # HEADs at once
_RETRY_BASE_S = 1.0
_RETRY_MAX_S = 60.0


class Match(Enum):
    """What a HEAD found against the ledger's entry."""

    SAME = "same"
    DIFFERS = "differs"
    UNKNOWN = "unknown"  # the store did not answer


@dataclass(frozen=True)
class Verdict:
    how: Match
    found: s3.ObjectHead | None = None
    error: str | None = None


def compare(client: Any, config: SinkConfig, session_id: str, entry: LedgerEntry) -> Verdict:
    try:
        found = s3.head(client, config, config.object_key(session_id))
    except Exception as exc:
        return Verdict(Match.UNKNOWN, error=type(exc).__name__)
    if found is None or found.size != entry.bytes:
        return Verdict(Match.DIFFERS, found)
    if entry.etag and not s3.same_etag(found.etag, entry.etag):
        return Verdict(Match.DIFFERS, found)
    return Verdict(Match.SAME, found)


class StoreCheck:
    """Runs the check on a thread of its own; `done` is set once every session had one HEAD."""

    def __init__(
        self,
        client: Any,
        config: SinkConfig,
        ledger: Ledger,
        differs: Callable[[str], None],
        stopping: Callable[[], bool],
        rate: float = VERIFY_RATE,
        batch: int = VERIFY_BATCH,
    ) -> None:
        self._client = client
        self._config = config
        self._ledger = ledger
        self._differs = differs
        self._stopping = stopping
        self._interval = batch / rate
        self._batch = batch
        self._lock = threading.Lock()
        self._unverified: set[str] = set()
        self._pending = 0  # not yet checked in the first pass
        self._left_open: list[OpenUpload] = []
        self.replaced = 0
        self.done = threading.Event()
        self._wake = threading.Event()

    def start(self, session_ids: Iterable[str]) -> None:
        todo = [sid for sid in session_ids if self._ledger.get(sid) is not None]
        with self._lock:
            self._pending = len(todo)
        # Only those open before this start: an upload begun since is a worker's, not stale.
        self._left_open = self._ledger.open_uploads()
        thread = threading.Thread(
            target=self._run, args=(todo,), name="sessiond-sink-verify", daemon=True
        )
        thread.start()

    def wake(self) -> None:
        """Stop waiting out a backoff (a stop)."""
        self._wake.set()

    @property
    def unverified(self) -> int:
        """Sessions whose object could not be checked yet (first pass included)."""
        with self._lock:
            return self._pending + len(self._unverified)

    def _run(self, todo: list[str]) -> None:
        left_open = abort_uploads(self._client, self._config, self._ledger, self._left_open)
        failures = 0
        with ThreadPoolExecutor(self._batch, thread_name_prefix="sessiond-sink-head") as pool:
            while not self._stopping():
                self._pass(pool, todo)
                self.done.set()
                with self._lock:
                    todo = sorted(self._unverified)
                if left_open:
                    left_open = abort_uploads(self._client, self._config, self._ledger, left_open)
                if not todo and not left_open:
                    return
                failures += 1
                delay = min(_RETRY_MAX_S, _RETRY_BASE_S * 2 ** min(failures - 1, 16))
                self._wake.wait(delay)
        self.done.set()

    def _pass(self, pool: ThreadPoolExecutor, todo: list[str]) -> None:
        for first in range(0, len(todo), self._batch):
            if self._stopping():
                return
            began = time.monotonic()
            batch = [(sid, self._ledger.get(sid)) for sid in todo[first : first + self._batch]]
            checks = [
                (sid, entry, pool.submit(compare, self._client, self._config, sid, entry))
                for sid, entry in batch
                if entry is not None
            ]
            for sid, entry, future in checks:
                self._settle(sid, entry, future.result())
            with self._lock:
                self._pending = max(0, self._pending - len(batch))
            rest = self._interval - (time.monotonic() - began)
            if rest > 0:
                self._wake.wait(rest)  # the rate limit

    def _settle(self, session_id: str, entry: LedgerEntry, verdict: Verdict) -> None:
        with self._lock:
            if verdict.how == Match.UNKNOWN:
                self._unverified.add(session_id)
            else:
                self._unverified.discard(session_id)
        if verdict.how == Match.UNKNOWN:
            return
        if verdict.how == Match.DIFFERS and self._ledger.forget_if(session_id, entry):
            found = verdict.found
            log_event(
                "object_replaced",
                logging.WARNING,
                session_id=session_id,
                expected_bytes=entry.bytes,
                expected_etag=entry.etag,
                found_bytes=None if found is None else found.size,
                found_etag=None if found is None else found.etag,
            )
            with self._lock:
                self.replaced += 1
            self._differs(session_id)
