"""Decoding many session files at once on every core, for the first crawl of a large set of
folders (or a big rescan). msgspec holds the GIL while it decodes, so threads would not help;
worker processes do, and the garbage of decoding (every message's slice) stays in them instead
of fragmenting the daemon's heap. Small batches are decoded in-process: a pool costs ~0.2 s."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from sessiond.index.loader import Loaded, read_and_decode
from sessiond.index.records import SessionRecord, shared
from sessiond.logs import log_event

POOL_MIN_FILES = 64  # fewer files than this are decoded in-process
CHUNK_FILES = 32  # files per task: enough to amortize a round trip, small enough to balance


def _decode_chunk(paths: list[str]) -> list[Loaded]:
    return [read_and_decode(path) for path in paths]


class CrawlPool:
    def __init__(self, workers: int | None = None, min_files: int = POOL_MIN_FILES) -> None:
        self._workers = workers or min(os.cpu_count() or 1, 8)
        self._min_files = min_files
        self._pool: ProcessPoolExecutor | None = None
        self._keys: dict[tuple[str, ...], tuple[str, ...]] = {}

    def decode_all(self, jobs: list[str]) -> list[Loaded]:
        if len(jobs) < self._min_files or self._workers < 2:
            return [read_and_decode(path) for path in jobs]
        chunks = [jobs[i : i + CHUNK_FILES] for i in range(0, len(jobs), CHUNK_FILES)]
        try:
            pool = self._ensure_pool()
            results = [loaded for part in pool.map(_decode_chunk, chunks) for loaded in part]
        except (BrokenProcessPool, OSError) as exc:
            log_event("crawl_pool_failed", logging.WARNING, error=str(exc)[:200])
            self.close()
            return [read_and_decode(path) for path in jobs]
        for loaded in results:
            if loaded.record is not None:
                self._share(loaded.record)
        return results

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # forkserver: the daemon has threads, and a plain fork of a threaded process can
            # deadlock in the child.
            context = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(self._workers, mp_context=context)
        return self._pool

    def _share(self, record: SessionRecord) -> None:
        """Records arrive unpickled with strings of their own: share the repeated ones again."""
        record.root = sys.intern(record.root)
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
