"""Decoding many session files at once on every core, for the first crawl of a large set of
folders (or a big rescan). msgspec holds the GIL while it decodes, so threads would not help;
worker processes do, and the garbage of decoding (every message's slice) stays in them instead
of fragmenting the daemon's heap. Small batches are decoded in-process: a pool costs ~0.2 s."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from sessiond.index.loader import Loaded, read_and_decode
from sessiond.index.records import SessionRecord, shared
from sessiond.logs import log_event

POOL_MIN_FILES = 64  # fewer files than this are decoded in-process
CHUNK_FILES = 32  # files per task: enough to amortize a round trip, small enough to balance


def _decode_chunk(paths: list[str]) -> list[Loaded]:
    return [read_and_decode(path) for path in paths]


def _nothing() -> None:
    pass


class DecodePool:
    def __init__(
        self,
        workers: int | None = None,
        min_files: int = POOL_MIN_FILES,
        on_progress: Callable[[], None] = _nothing,
    ) -> None:
        self._on_progress = on_progress  # called after each file or chunk: the health check
        self._workers = workers or min(os.cpu_count() or 1, 8)
        self._min_files = min_files
        self._pool: ProcessPoolExecutor | None = None
        self._keys: dict[tuple[str, ...], tuple[str, ...]] = {}

    def decode_all(self, jobs: list[str]) -> list[Loaded]:
        if len(jobs) < self._min_files or self._workers < 2:
            return self._in_process(jobs)
        chunks = [jobs[i : i + CHUNK_FILES] for i in range(0, len(jobs), CHUNK_FILES)]
        results: list[Loaded] = []
        try:
            pool = self._ensure_pool()
            for part in pool.map(_decode_chunk, chunks):
                results.extend(part)
                self._on_progress()
        except (BrokenProcessPool, OSError, MemoryError) as exc:
            # A worker killed (out of memory) or none could be started: the files left are
            # read here, one at a time, so one bad file costs its own read, not the crawl.
            log_event("crawl_pool_failed", logging.WARNING, error=str(exc)[:200])
            self.close()
            results.extend(self._in_process(jobs[len(results) :]))
        for loaded in results:
            if loaded.record is not None:
                self._share(loaded.record)
        return results

    def _in_process(self, jobs: list[str]) -> list[Loaded]:
        results = []
        for path in jobs:
            results.append(read_and_decode(path))
            self._on_progress()
        return results

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # forkserver: the daemon has threads, and a plain fork of a threaded process can
            # deadlock in the child.
            context = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(
                self._workers, mp_context=context, initializer=_ignore_interrupts
            )
        return self._pool

    def _share(self, record: SessionRecord) -> None:
        """Records arrive unpickled with strings of their own: share the repeated ones again."""
        record.folder = sys.intern(record.folder)
        record.directory = shared(record.directory)
        record.agent = sys.intern(record.agent)
        record.model = shared(record.model)
        record.workspaces = self._keys.setdefault(record.workspaces, record.workspaces)

    def close(self) -> None:
        """Stop the workers (they hold memory); a later crawl starts new ones."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._keys.clear()


def _ignore_interrupts() -> None:
    """A Ctrl-C reaches the whole foreground process group; the daemon shuts the pool down
    itself, so its workers must not each print a KeyboardInterrupt traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
