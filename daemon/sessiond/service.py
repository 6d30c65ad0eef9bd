"""The service heartbeat: `STATUS=` kept current, and `WATCHDOG=1` only while sessiond is healthy.

A task on the event loop checks, about once a second, that the indexer thread and the file
watcher's thread are alive, and that the indexer makes progress: a thread that is alive but
stuck on one step (an `open()` that never returns, say) for `Indexer.stall_s` counts as dead,
since its index goes stale all the same. While all is healthy, it sends `WATCHDOG=1` every
half `WATCHDOG_USEC` (the task running at all proves the event loop is alive) and `STATUS=`
whenever the counts change. Once the indexer or the watcher is dead or stuck, sessiond stops
pinging: under a systemd watchdog the service manager kills and restarts it
(`Restart=on-failure`); without one, sessiond exits with status 1 itself. Either way it leads
to a restart, never to a silently stale index.

Test-only faults: `SESSIOND_TEST_FAULTS=watcher_dies`, read once at start, makes SIGUSR2 stop
every watchdog inotify reader thread in the process, the way a crashed watcher would end;
`indexer_stalls` makes SIGUSR2 give the indexer a step that blocks for a minute, and lowers
the stall limit to 2 s, the way a read that never returns would hold it.
Nothing in the socket protocol can reach it; it exists so the tests can kill the watcher for
real (tests/e2e/service/test_activation.py). `no_fts5` makes search and `doctor` act as on a Python
whose SQLite lacks FTS5 (sessiond.search.store).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from sessiond import systemd
from sessiond.logs import log_event

TICK_S = 1.0  # how often health and counts are looked at
TEST_FAULTS_ENV = "SESSIOND_TEST_FAULTS"


class Watched(Protocol):
    """What the heartbeat needs of the indexer."""

    def healthy(self) -> bool: ...

    def stalled_for(self) -> float: ...


class Heartbeat:
    def __init__(
        self,
        indexer: Watched,
        status: Callable[[], str],
        on_dead: Callable[[], None],
        env: Mapping[str, str],
    ) -> None:
        self._indexer = indexer
        self._status = status
        self._on_dead = on_dead
        self.interval = systemd.watchdog_interval(env)
        self._sent_status: str | None = None

    async def run(self) -> None:
        # Ticks of half the interval, and a ping on the tick nearest its due time: pings are
        # never more than 1.25 intervals (0.625 WATCHDOG_USEC) apart, even if a timer is late.
        tick = min(TICK_S, self.interval / 2) if self.interval else TICK_S
        next_ping = 0.0
        while True:
            if not self._indexer.healthy():
                self._died()
                return
            lines = []
            status = self._status()
            if status != self._sent_status:
                lines.append(f"STATUS={status}")
            now = time.monotonic()
            if self.interval and now + tick / 2 >= next_ping:
                lines.append("WATCHDOG=1")
                next_ping = now + self.interval
            if lines and systemd.notify("\n".join(lines)):
                self._sent_status = status
            await asyncio.sleep(tick)  # a periodic timer, not a wait for another party

    def _died(self) -> None:
        restart = "the service manager's watchdog" if self.interval else "exiting with status 1"
        log_event(
            "unhealthy",
            logging.CRITICAL,
            error="the indexer or the file watcher thread has died or is stuck; "
            "the index would go stale",
            stalled_s=round(self._indexer.stalled_for(), 1),
            action=restart,
        )
        systemd.notify("STATUS=unhealthy: the file watcher or the indexer died; restarting")
        if not self.interval:
            self._on_dead()


class Counted(Protocol):
    """What the status line needs of the index."""

    seq: int

    def counts(self) -> Mapping[str, object]: ...


class StatusText:
    """The one-line `STATUS=` text (what `systemctl --user status sessiond` shows), counted
    again only when the index has changed."""

    def __init__(self, index: Counted, ready: Callable[[], bool]) -> None:
        self._index = index
        self._ready = ready
        self._seq = -1
        self._text = ""

    def __call__(self) -> str:
        if not self._ready():
            return "building the index"
        seq = self._index.seq
        if seq != self._seq:
            counts = self._index.counts()
            self._text = (
                f"serving {counts['sessions']} sessions in {counts['workspaces']} workspaces"
            )
            self._seq = seq
        return self._text


class Stallable(Protocol):
    stall_s: float

    def call(self, fn: Callable[[], object]) -> object: ...


STALL_FAULT_S = 2.0


def install_test_faults(
    loop: asyncio.AbstractEventLoop, env: Mapping[str, str], indexer: Stallable | None = None
) -> None:
    """Arm the test-only faults named in `SESSIOND_TEST_FAULTS` (see the module docstring)."""
    faults = {f.strip() for f in env.get(TEST_FAULTS_ENV, "").split(",") if f.strip()}
    if "watcher_dies" in faults:
        loop.add_signal_handler(signal.SIGUSR2, _stop_observers)
    elif "indexer_stalls" in faults and indexer is not None:
        indexer.stall_s = STALL_FAULT_S
        loop.add_signal_handler(signal.SIGUSR2, lambda: _stall(indexer))
    if faults:
        log_event("test_faults", logging.WARNING, faults=sorted(faults))


def _stall(indexer: Stallable) -> None:
    indexer.call(lambda: threading.Event().wait(60))
    log_event("test_fault", logging.WARNING, fault="indexer_stalls")


def _stop_observers() -> None:
    from watchdog.observers.inotify_c import InotifyFD

    for thread in threading.enumerate():
        if isinstance(thread, InotifyFD):
            thread.stop()
    log_event("test_fault", logging.WARNING, fault="watcher_dies")
