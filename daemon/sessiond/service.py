"""The service's health: while the indexer and the file watcher are alive and making progress,
the systemd heartbeat (sessiond.systemd.heartbeat) pings the watchdog and keeps `STATUS=`
current; once they are not, sessiond says so and stops pinging.

Healthy means: the indexer thread and the file watcher's thread are alive, and the indexer
makes progress: a thread that is alive but stuck on one step (an `open()` that never returns,
say) for `Indexer.stall_s` counts as dead, since its index goes stale all the same. The
heartbeat task running at all proves the event loop is alive. Once the indexer or the watcher
is dead or stuck, the pings stop: under a systemd watchdog the service manager kills and
restarts sessiond (`Restart=on-failure`); without one, sessiond exits with status 1 itself.
Either way it leads to a restart, never to a silently stale index.

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
from collections.abc import Callable, Mapping
from typing import Protocol

from sessiond.index.store import IndexCounts
from sessiond.logs import log_event
from sessiond.systemd.heartbeat import Heartbeat
from sessiond.systemd.notify import Notifier

TEST_FAULTS_ENV = "SESSIOND_TEST_FAULTS"
UNHEALTHY_STATUS = "unhealthy: the file watcher or the indexer died; restarting"


class Watched(Protocol):
    """What the health watch needs of the indexer."""

    def healthy(self) -> bool: ...

    def stalled_for(self) -> float: ...


class HealthWatch:
    """Runs the heartbeat while `indexer` is healthy; then logs `unhealthy`, puts it in the
    status line, and calls `on_dead` when no watchdog will restart sessiond."""

    def __init__(
        self,
        indexer: Watched,
        status: Callable[[], str],
        on_dead: Callable[[], None],
        heartbeat: Heartbeat,
        notifier: Notifier,
    ) -> None:
        self._indexer = indexer
        self._status = status
        self._on_dead = on_dead
        self._heartbeat = heartbeat
        self._notifier = notifier

    async def run(self) -> None:
        await self._heartbeat.run(self._indexer.healthy, self._status)
        self._died()

    def _died(self) -> None:
        watchdog = self._heartbeat.watchdog
        log_event(
            "unhealthy",
            logging.CRITICAL,
            error="the indexer or the file watcher thread has died or is stuck; "
            "the index would go stale",
            stalled_s=round(self._indexer.stalled_for(), 1),
            action="the service manager's watchdog" if watchdog else "exiting with status 1",
        )
        self._notifier.status(UNHEALTHY_STATUS)
        if not watchdog:
            self._on_dead()


class Counted(Protocol):
    """What the status line needs of the index."""

    seq: int

    def counts(self) -> IndexCounts: ...


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
            self._text = f"serving {counts.sessions} sessions in {counts.workspaces} workspaces"
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
