"""When each session is uploaded: debounce, maximum delay, one in flight, retries, flushes.

Pure bookkeeping with no threads and no I/O; the uploader calls it under its lock. Every change
gets a sequence number. An attempt covers the newest change at the moment it begins; a change
that arrives while an attempt runs leaves the session dirty, which schedules exactly one more
attempt of the newest state once this one ends. A flush (or stop) "kicks": every unsettled
session is due now, and a failure in an attempt that began before the kick is tried once more
at once, so that each flush sees one attempt of its own for every change before it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple


class Result(Enum):
    """How one attempt ended."""

    UPLOADED = "uploaded"  # the object now holds the change
    UNCHANGED = "unchanged"  # the object already held it (ledger fingerprint equal)
    GONE = "gone"  # the session no longer exists; nothing to upload
    FAILED = "failed"


@dataclass
class Entry:
    changed_seq: int = 0  # the newest change notified
    settled_seq: int = 0  # the newest change the object is known to hold (or that is moot)
    settled_how: Result | None = None
    failed_seq: int = 0  # the newest change covered by a failed attempt...
    failed_epoch: int = -1  # ...and the kick epoch that attempt began in
    first_change: float | None = None  # first change not yet covered by an attempt
    last_change: float = 0.0
    due: float | None = None
    in_flight: bool = False
    failures: int = 0  # consecutive failed attempts
    retrying: bool = False

    @property
    def unsettled(self) -> bool:
        return self.changed_seq > self.settled_seq


@dataclass(frozen=True)
class Attempt:
    session_id: str
    seq: int
    epoch: int
    number: int  # 1 for a first try, then 2, 3, ... while failures go on


class FlushProgress(NamedTuple):
    uploaded: int
    failed: int
    pending: int


class Counts(NamedTuple):
    """Sessions waiting (`pending`, of them `retrying` after a failure) and in flight."""

    pending: int
    in_flight: int
    retrying: int


class Due(NamedTuple):
    session_id: str | None  # the session due first; None when none is
    wait: float  # seconds until then (<= 0: due now)


class Schedule:
    def __init__(
        self,
        debounce_s: float,
        max_delay_s: float,
        backoff_base_s: float,
        backoff_max_s: float,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._debounce = debounce_s
        self._max_delay = max(max_delay_s, debounce_s)
        self._backoff_base = backoff_base_s
        self._backoff_max = backoff_max_s
        self._rng = rng
        self.entries: dict[str, Entry] = {}
        self._due: set[str] = set()  # sessions with a due time and not in flight
        self.seq = 0
        self.epoch = 0
        self.in_flight = 0
        self._final_epoch: int | None = None  # set by the stop's kick

    # --- changes and attempts -------------------------------------------------------------

    def change(self, session_id: str, now: float, *, immediate: bool = False) -> None:
        entry = self.entries.get(session_id)
        if entry is None:
            entry = self.entries[session_id] = Entry()
        self.seq += 1
        entry.changed_seq = self.seq
        entry.last_change = now
        if entry.first_change is None:
            entry.first_change = now
        if entry.in_flight:
            return  # dirty: `_after` schedules the one more attempt
        due = now if immediate else self._debounced(entry)
        if entry.retrying and entry.due is not None:
            due = max(due, entry.due)  # a save does not cut a backoff short
        self._set_due(session_id, entry, due)

    def next_due(self, now: float) -> Due:
        """The session due first and the seconds until then."""
        best, best_due = None, math.inf
        for session_id in self._due:
            due = self.entries[session_id].due
            if due is not None and due < best_due:
                best, best_due = session_id, due
        return Due(best, best_due - now)

    def begin(self, session_id: str) -> Attempt:
        entry = self.entries[session_id]
        self._due.discard(session_id)
        entry.due = None
        entry.in_flight = True
        entry.first_change = None
        self.in_flight += 1
        return Attempt(session_id, entry.changed_seq, self.epoch, entry.failures + 1)

    def succeed(self, attempt: Attempt, how: Result, now: float) -> None:
        entry = self._end(attempt)
        entry.settled_seq = max(entry.settled_seq, attempt.seq)
        entry.settled_how = how
        entry.failures = 0
        entry.retrying = False
        self._after(attempt, entry, now)

    def fail(self, attempt: Attempt, now: float, *, retry: bool) -> float | None:
        """Record a failed attempt; return the delay before the retry, or None for none.

        Without `retry` (a torn file) the next change is what tries again.
        """
        entry = self._end(attempt)
        entry.failures += 1
        entry.failed_seq = max(entry.failed_seq, attempt.seq)
        entry.failed_epoch = attempt.epoch
        delay: float | None = None
        if self._final_epoch is not None and attempt.epoch >= self._final_epoch:
            delay = None  # stopping: one try each; the rest waits for the next start
        elif self.epoch > attempt.epoch:
            delay = 0.0  # a flush or stop began during this attempt: it gets its own try
        elif retry:
            delay = self.backoff(entry.failures)
        if delay is None:
            entry.retrying = False
            self._after(attempt, entry, now)
            return None
        entry.retrying = True
        self._set_due(attempt.session_id, entry, now + delay)
        return delay

    def backoff(self, failures: int) -> float:
        """Capped exponential backoff with full jitter."""
        cap = min(self._backoff_max, self._backoff_base * 2.0 ** min(failures - 1, 32))
        return self._rng() * cap

    def _end(self, attempt: Attempt) -> Entry:
        entry = self.entries[attempt.session_id]
        entry.in_flight = False
        self.in_flight -= 1
        return entry

    def _after(self, attempt: Attempt, entry: Entry, now: float) -> None:
        if entry.changed_seq > attempt.seq:  # changed during the attempt: one more
            if entry.first_change is None:
                entry.first_change = now
            self._set_due(attempt.session_id, entry, max(now, self._debounced(entry)))

    def _debounced(self, entry: Entry) -> float:
        first = entry.first_change if entry.first_change is not None else entry.last_change
        return min(entry.last_change + self._debounce, first + self._max_delay)

    def _set_due(self, session_id: str, entry: Entry, due: float) -> None:
        entry.due = due
        self._due.add(session_id)

    # --- flush and stop -------------------------------------------------------------------

    def kick(self, now: float, *, final: bool = False) -> int:
        """Make every unsettled session due now; return the new epoch.

        `final` (the stop): from now on a failed attempt is not retried.
        """
        self.epoch += 1
        if final:
            self._final_epoch = self.epoch
        for session_id, entry in self.entries.items():
            if entry.unsettled and not entry.in_flight:
                self._set_due(session_id, entry, now)
        return self.epoch

    def snapshot(self) -> dict[str, int]:
        """The changes a flush starting now waits for."""
        return {sid: e.changed_seq for sid, e in self.entries.items() if e.unsettled}

    def progress(self, snapshot: Mapping[str, int], epoch: int) -> FlushProgress:
        uploaded = failed = pending = 0
        for session_id, seq in snapshot.items():
            entry = self.entries[session_id]
            if entry.settled_seq >= seq:
                uploaded += entry.settled_how in (Result.UPLOADED, Result.UNCHANGED)
            elif entry.failed_seq >= seq and entry.failed_epoch >= epoch:
                failed += 1
            else:
                pending += 1
        return FlushProgress(uploaded=uploaded, failed=failed, pending=pending)

    # --- status ---------------------------------------------------------------------------

    def counts(self) -> Counts:
        pending = retrying = 0
        for entry in self.entries.values():
            if entry.unsettled and not entry.in_flight:
                pending += 1
                retrying += entry.retrying
        return Counts(pending=pending, in_flight=self.in_flight, retrying=retrying)

    def has_due_before(self, deadline: float) -> bool:
        return any((self.entries[s].due or math.inf) <= deadline for s in self._due)
