"""Bookkeeping for inotify queue overflows: which folders lost events, and when the next rescan
may run. Rescans back off (doubling up to a cap) while overflows keep coming, so a storm of
overflows costs a bounded number of rescans; a quiet spell resets the backoff."""

from __future__ import annotations

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0


class OverflowTracker:
    def __init__(self) -> None:
        self._folders: set[str] = set()
        self._backoff = 0.0
        self._next_at = 0.0
        self.count = 0

    def overflowed(self, folder: str) -> bool:
        """Record that `folder` lost events; true when this starts a new overflow (one kernel
        overflow is reported for every watched folder at once)."""
        new = not self._folders
        if new:
            self.count += 1
        self._folders.add(folder)
        return new

    def seconds_until_due(self, now: float) -> float | None:
        """None when nothing waits for a rescan."""
        return max(0.0, self._next_at - now) if self._folders else None

    def take_due(self, now: float) -> set[str]:
        """The folders to rescan now (empty when none, or not yet due)."""
        if not self._folders:
            if now > self._next_at + BACKOFF_MAX_S:
                self._backoff = 0.0
            return set()
        if now < self._next_at:
            return set()
        folders, self._folders = self._folders, set()
        self._backoff = min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, self._backoff * 2))
        self._next_at = now + self._backoff
        return folders
