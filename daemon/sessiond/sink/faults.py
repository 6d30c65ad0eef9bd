"""Test-only pauses inside a multipart upload, so tests can cut the store off (or kill the daemon)
between two parts for real.

`SESSIOND_TEST_FAULTS=sink_pause_after_head` or `sink_pause_after_copy` (read once, by the
daemon's uploads wiring) makes the first delta upload that reaches that point log `test_fault`
(`sink_pause_restore_after_catalog`: the first restore, once it has read the catalogs)
with the session and wait until the file `<state_dir>/sink-pause.release` exists (or 120 s
pass), then delete it and go on. Later deltas do not pause. Nothing in the socket protocol can
reach this; without the variable `NO_FAULTS` is used and costs nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from enum import Enum

from sessiond.logs import log_event


class Point(Enum):
    """Where a test can pause the daemon; `sink_pause_<value>` in SESSIOND_TEST_FAULTS."""

    AFTER_HEAD = "after_head"  # a delta upload, after its HEAD
    AFTER_COPY = "after_copy"  # a delta upload, after its copied part
    RESTORE_AFTER_CATALOG = "restore_after_catalog"  # a restore, once it read the catalogs


RELEASE_NAME = "sink-pause.release"
_PREFIX = "sink_pause_"
_MAX_PAUSE_S = 120.0


class Faults:
    def __init__(self, points: frozenset[Point] = frozenset(), release_path: str = "") -> None:
        self._armed = set(points)
        self._release = release_path
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str], state_dir: str) -> Faults:
        names = {name.strip() for name in env.get("SESSIOND_TEST_FAULTS", "").split(",")}
        points = frozenset(point for point in Point if _PREFIX + point.value in names)
        if not points:
            return NO_FAULTS
        log_event("test_faults", logging.WARNING, faults=sorted(_PREFIX + p.value for p in points))
        return cls(points, os.path.join(state_dir, RELEASE_NAME))

    def pause(self, point: Point, session_id: str) -> None:
        with self._lock:
            if point not in self._armed:
                return
            self._armed.discard(point)
        log_event("test_fault", logging.WARNING, fault=_PREFIX + point.value, session_id=session_id)
        deadline = time.monotonic() + _MAX_PAUSE_S
        while not os.path.exists(self._release) and time.monotonic() < deadline:
            time.sleep(0.02)  # test-only: waits on the test's release file
        try:
            os.unlink(self._release)
        except OSError:
            pass


NO_FAULTS = Faults()
