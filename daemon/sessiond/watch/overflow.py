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

    def has(self, path: str) -> bool:
        """True when the folder of `path` waits for a rescan."""
        return bool(self._folders) and path.rpartition("/")[0] in self._folders

    def pending(self) -> set[str]:
        """The folders whose lost events no rescan has covered yet."""
        return set(self._folders)

    def seconds_until_due(self, now: float) -> float | None:
        """None when nothing waits for a rescan."""
        return max(0.0, self._next_at - now) if self._folders else None

    def take_due(self, now: float, urgent: bool = False) -> set[str]:
        """The folders to rescan now (empty when none, or not yet due). `urgent`: someone
        waits on one of them (a `sync`), so the backoff gives way; the storm it guards against
        costs at most one rescan per waiting `sync`."""
        if not self._folders:
            if now > self._next_at + BACKOFF_MAX_S:
                self._backoff = 0.0
            return set()
        if now < self._next_at and not urgent:
            return set()
        folders, self._folders = self._folders, set()
        self._backoff = min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, self._backoff * 2))
        self._next_at = now + self._backoff
        return folders
