"""The `sync` freshness barrier, done with cookie files as Watchman does.

A cookie is an empty file created in each watched folder. inotify reports a folder's events in
order, so once the indexer has seen every cookie's event it has also seen (and applied) every
change made to those folders before the cookies were created. The cookie is removed as soon as
its event is seen; its name is no session file's, so the agent never looks at it.
"""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import Future
from typing import Any

COOKIE_PREFIX = ".sessiond-cookie-"


def is_cookie(path: str) -> bool:
    return os.path.basename(path).startswith(COOKIE_PREFIX)


class Barriers:
    """Outstanding cookies and the futures waiting on them. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self._waiting: dict[int, Future[None]] = {}
        self._remaining: dict[int, set[str]] = {}
        self._owner: dict[str, int] = {}
        self._planted: dict[str, int] = {}  # cookie -> its place in the order of creation
        self._next_seq = 0

    def plant(self, folders: list[str]) -> tuple[Future[None], list[str]]:
        """Create a cookie in each folder. Returns the future, resolved when all are seen, and
        the folders where no cookie could be made (the caller covers those another way)."""
        future: Future[None] = Future()
        barrier_id = next(self._counter)
        # A placeholder keeps the barrier open while cookies are still being planted: the
        # indexer may see the first cookie before the last one exists.
        planting = f"<planting {barrier_id}>"
        with self._lock:
            self._waiting[barrier_id] = future
            self._remaining[barrier_id] = {planting}
            self._owner[planting] = barrier_id
        failed: list[str] = []
        for folder in folders:
            cookie = os.path.join(folder, f"{COOKIE_PREFIX}{os.getpid()}-{barrier_id}")
            # Created under the lock, so a `mark()` falls wholly before or after its creation.
            with self._lock:
                self._owner[cookie] = barrier_id
                self._remaining[barrier_id].add(cookie)
                self._planted[cookie] = self._next_seq
                self._next_seq += 1
                try:
                    os.close(os.open(cookie, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                    made = True
                except OSError:
                    made = False
            if not made:
                failed.append(folder)
                self._release(cookie)
        self._release(planting)
        return future, failed

    def mark(self) -> int:
        """A point in the order of cookie creation: `release_folder(f, before=mark)` releases
        exactly the cookies made before it. Take it once a folder's watch is in place and
        before scanning it: a cookie made earlier may never give an event (its folder was not
        watched), but the scan covers it; a cookie made later gives its event."""
        with self._lock:
            return self._next_seq

    def held(self, folders: set[str]) -> bool:
        """True when a cookie waits in one of `folders`."""
        with self._lock:
            return any(os.path.dirname(c) in folders for c in self._planted)

    def seen(self, cookie: str) -> None:
        """The indexer reached `cookie`'s event: remove the file, maybe release a barrier."""
        try:
            os.unlink(cookie)
        except OSError:
            pass
        self._release(cookie)

    def release_folder(self, folder: str, before: int | None = None) -> None:
        """Events of `folder` were lost or it is gone, or it was just scanned: its cookies
        (those made before the mark `before`, when given) count as seen."""
        with self._lock:
            cookies = [
                c
                for c, seq in self._planted.items()
                if os.path.dirname(c) == folder and (before is None or seq < before)
            ]
        for cookie in cookies:
            self.seen(cookie)

    def _release(self, cookie: str) -> None:
        with self._lock:
            self._planted.pop(cookie, None)
            barrier_id = self._owner.pop(cookie, None)
            if barrier_id is None:
                return
            remaining = self._remaining.get(barrier_id)
            if remaining is not None:
                remaining.discard(cookie)
                if remaining:
                    return
        self._finish(barrier_id)

    def _finish(self, barrier_id: int) -> None:
        with self._lock:
            self._remaining.pop(barrier_id, None)
            future = self._waiting.pop(barrier_id, None)
        if future is not None and not future.done():
            future.set_result(None)

    def abandon(self, future: Future[None]) -> None:
        """A waiter gave up (timeout): forget its cookies and remove their files."""
        with self._lock:
            ids = [k for k, f in self._waiting.items() if f is future]
            cookies = [c for c, owner in self._owner.items() if owner in ids]
        for cookie in cookies:
            self.seen(cookie)


def when_all(*futures: Future[Any]) -> Future[None]:
    """A future resolved once every one of `futures` is done."""
    done: Future[None] = Future()

    def settle(_: Future[Any]) -> None:
        if all(f.done() for f in futures) and not done.done():
            done.set_result(None)

    for future in futures:
        future.add_done_callback(settle)
    return done
