"""Looking at a folder inotify cannot watch (its watches used up, or the folder unreadable):
a stat of the folder on a fixed interval says when its files need a look (docs/protocol.md,
"status")."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from enum import Enum

POLL_INTERVAL_S = 1.0  # how often a polled folder is stat'ed
WATCH_RETRY_S = 60.0  # how often a polled folder is offered to inotify again
NOT_THERE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
_RECENT_POLLS = 2
"""Polls after a change that look at the files whatever the folder's stat says: two changes in
one clock tick leave the same mtime, so the second would show as no change."""

Signature = tuple[int, int, int, int, int, int]


def signature(folder: str) -> Signature:
    st = os.stat(folder)
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_nlink)


def _mode(sig: Signature | None) -> int | None:
    return None if sig is None else sig[4]


class Look(Enum):
    NOT_DUE = "not due"
    GONE = "gone"  # the folder is no longer there
    SAME = "same"  # nothing changed since the last look
    CHANGED = "changed"  # its files need a look


@dataclass
class Poll:
    folder: str
    due: float
    watch_retry: float
    signature: Signature | None = None
    recent: int = 0
    mode_changed: bool = False

    @classmethod
    def start(cls, folder: str, now: float) -> Poll:
        """Polling starts once the folder was scanned: its stat now is the one seen."""
        poll = cls(folder, now + POLL_INTERVAL_S, now + WATCH_RETRY_S)
        try:
            poll.signature = signature(folder)
        except OSError:
            pass
        return poll

    def look(self, now: float, force: bool = False) -> Look:
        """Stat the folder if it is due (always when `force`: a `sync` waits); CHANGED also
        for every forced look."""
        if not force and now < self.due:
            return Look.NOT_DUE
        self.due = now + POLL_INTERVAL_S
        try:
            sig: Signature | None = signature(self.folder)
        except OSError as exc:
            if exc.errno in NOT_THERE:
                return Look.GONE
            sig = None
        old, self.signature = self.signature, sig
        if sig != old:
            self.recent = _RECENT_POLLS
        self.mode_changed = _mode(sig) != _mode(old)
        if force or self.recent:
            self.recent = max(0, self.recent - 1)
            return Look.CHANGED
        return Look.SAME

    def watch_due(self, now: float) -> bool:
        """Whether to offer the folder to inotify again: now and then, and at once when its
        mode changed (an unreadable folder cannot be watched; one readable again can)."""
        if self.mode_changed or now >= self.watch_retry:
            self.watch_retry = now + WATCH_RETRY_S
            return True
        return False
