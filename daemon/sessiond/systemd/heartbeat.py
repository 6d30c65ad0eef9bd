"""The watchdog heartbeat: `WATCHDOG=1` every half `WATCHDOG_USEC` while sessiond is healthy,
and `STATUS=` sent whenever its text changes. What counts as healthy and what the status says
is decided by the caller (sessiond.service); this module only keeps time and tells systemd.
docs/systemd.md, "The units" (`WatchdogSec=`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping

from sessiond.systemd.notify import Notification, Notifier

TICK_S = 1.0  # how often health and the status text are looked at


def watchdog_interval(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between `WATCHDOG=1` pings, half of `WATCHDOG_USEC` (as sd_watchdog_enabled
    reads it), or None when the service manager asked for no watchdog, or asked another
    process than `pid` (this one by default) through `WATCHDOG_PID`."""
    watchdog_pid = env.get("WATCHDOG_PID")
    if watchdog_pid and watchdog_pid != str(os.getpid() if pid is None else pid):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


class Heartbeat:
    def __init__(self, notifier: Notifier, env: Mapping[str, str], tick_s: float = TICK_S) -> None:
        self._notifier = notifier
        self.interval = watchdog_interval(env)
        self._tick_s = tick_s
        self._sent_status: str | None = None

    @property
    def watchdog(self) -> bool:
        """True when the service manager runs a watchdog, which restarts a silent sessiond."""
        return self.interval is not None

    async def run(self, healthy: Callable[[], bool], status: Callable[[], str]) -> None:
        """Beat until `healthy()` is false, then return without another ping."""
        # Ticks of half the interval, and a ping on the tick nearest its due time: pings are
        # never more than 1.25 intervals (0.625 WATCHDOG_USEC) apart, even if a timer is late.
        tick = min(self._tick_s, self.interval / 2) if self.interval else self._tick_s
        next_ping = 0.0
        while healthy():
            text = status()
            changed = text != self._sent_status
            now = time.monotonic()
            ping = False
            if self.interval is not None and now + tick / 2 >= next_ping:
                ping, next_ping = True, now + self.interval
            if changed or ping:
                sent = self._notifier.send(
                    Notification(status=text if changed else None, watchdog=ping)
                )
                if sent:
                    self._sent_status = text
            await asyncio.sleep(tick)  # a periodic timer, not a wait for another party
