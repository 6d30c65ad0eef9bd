"""The daemon's side of search: what to index next, the worker process that indexes it, and
the reader connections the `search` op's queries run on (their SQL: search/ranking.py;
docs/search.md).

The indexer tells `on_index_change` about every saved or removed session (on its own thread;
that costs a dict insert). A feeder thread hands the worker process batches, live changes
before the backlog of a first build or rebuild, and counts what it reports. Queries run on
reader connections of their own (WAL: readers never wait for the worker).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from sessiond.index.change import Change
from sessiond.index.records import SessionRecord
from sessiond.index.store import SessionIndex
from sessiond.logs import log_event
from sessiond.search.ranking import MAX_LIMIT, run_query
from sessiond.search.store import (
    connect,
    fts5_missing,
    index_path,
    read_states,
    version_key,
)
from sessiond.search.worker import (
    BatchDone,
    BatchResult,
    CheckIndex,
    IndexJobs,
    Job,
    Opened,
    OpenFailed,
    StopWorker,
    worker_main,
)

BATCH_SESSIONS = 64
BATCH_BYTES = 32 * 1024 * 1024  # a batch is one transaction: about this much session file
PROGRESS_INTERVAL_S = 5.0
WORKER_START_TIMEOUT_S = 600.0  # opening checks the whole file (quick_check)
WORKER_RESTARTS = 5


class SearchUnavailable(Exception):
    """Search cannot answer now; the message says why."""


class SearchQueryRefused(Exception):
    """FTS5 refused a translated query (the translation should make that impossible)."""


@dataclass
class Totals:
    added: int = 0
    appended: int = 0
    reindexed: int = 0
    unchanged: int = 0
    dropped: int = 0
    unreadable: int = 0
    messages: int = 0
    bytes_read: int = 0

    def add(self, result: BatchResult) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(result, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class _Build:
    """A first build or rebuild: the backlog a reconcile found, and how it goes."""

    started: float
    queued: int
    bytes_at_start: int
    logged_at: float = field(default_factory=time.monotonic)


class SearchService:
    def __init__(
        self, state_dir: str, index: SessionIndex, env: Mapping[str, str] | None = None
    ) -> None:
        self._index = index
        self.path = index_path(state_dir)
        self.unavailable: str | None = fts5_missing(env)
        self._lock = threading.Condition()
        self._seq = 0
        self._live: OrderedDict[str, int] = OrderedDict()  # path -> seq of its first change
        self._backlog: OrderedDict[str, None] = OrderedDict()
        self._in_flight: list[tuple[str, int | None]] = []  # the batch being indexed (path, seq)
        self._started = False
        self._stopping = False
        self._check_asked = False
        self._epoch = 0  # grows when the index file is made anew: readers reconnect
        self._readers: queue.SimpleQueue[tuple[int, sqlite3.Connection]] = queue.SimpleQueue()
        self.docs = 0
        self.totals = Totals()
        self.rebuilds = 0
        self._batches = 0  # batches the workers answered
        self.last_error: str | None = None
        self._build: _Build | None = None
        self._ready = threading.Event()  # the worker opened the index and the reconcile is queued
        self._thread = threading.Thread(target=self._run, name="sessiond-search", daemon=True)
        self._worker: BaseProcess | None = None
        self._pipe: Connection | None = None

    # --- fed by the indexer (its thread) -------------------------------------------------

    def on_index_change(self, change: Change, record: SessionRecord) -> None:
        with self._lock:
            self._seq += 1
            self._backlog.pop(record.path, None)
            self._live.setdefault(record.path, self._seq)
            self._lock.notify_all()

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Once the index is built: open the worker, reconcile, and keep up from then on."""
        if self.unavailable is None and not self._started:
            self._started = True
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._started:
            self._thread.join(timeout)
        while True:
            try:
                self._readers.get_nowait()[1].close()
            except queue.Empty:
                break

    # --- the feeder thread ---------------------------------------------------------------

    def _run(self) -> None:
        restarts = 0
        while not self._stopping:
            batches_before = self._batches
            try:
                self._serve_worker()
                return
            except (EOFError, OSError, _WorkerFailed) as exc:
                self.last_error = str(exc)[:300] or type(exc).__name__
                # Retried with backoff: a full or read-only state folder may recover.
                log_event("search_worker_failed", logging.WARNING, error=self.last_error)
                self._requeue_in_flight()
                restarts = 1 if self._batches > batches_before else restarts + 1  # in a row
                if restarts > WORKER_RESTARTS:
                    self._give_up(f"the indexing worker failed {restarts} times: {self.last_error}")
                    return
                with self._lock:
                    self._lock.wait_for(lambda: self._stopping, timeout=min(30.0, 2.0**restarts))
            finally:
                self._close_worker()

    def _give_up(self, reason: str) -> None:
        with self._lock:
            self.unavailable = reason
            self._lock.notify_all()

    def _serve_worker(self) -> None:
        self._open_worker()
        while True:
            with self._lock:
                self._lock.wait_for(
                    lambda: self._stopping or self._live or self._backlog or self._check_asked
                )
                if self._stopping:
                    return
                check, self._check_asked = self._check_asked, False
                taken = [] if check else self._take_batch()
            jobs = [Job(path, self._index.by_path(path)) for path, _ in taken]
            started = time.monotonic()
            result = self._exchange(CheckIndex() if check else IndexJobs(jobs))
            self._finish_batch(result, len(jobs), time.monotonic() - started)

    def _open_worker(self) -> None:
        context = multiprocessing.get_context("forkserver")  # the daemon has threads: no fork
        parent, child = context.Pipe()
        worker = context.Process(
            target=worker_main, args=(child, self.path), name="sessiond-search", daemon=True
        )
        worker.start()
        self._worker = worker
        child.close()
        self._pipe = parent
        if not parent.poll(WORKER_START_TIMEOUT_S):
            raise _WorkerFailed("the indexing worker did not open the index in time")
        message: Opened | OpenFailed = parent.recv()
        if isinstance(message, OpenFailed):  # neither opened nor made (retried, then given up)
            raise _WorkerFailed(message.reason)
        rebuilt, docs = message.rebuilt, message.docs
        if rebuilt is not None:
            self.rebuilds += 1
            log_event("search_index_rebuilt", logging.WARNING, reason=rebuilt)
        self._new_epoch()
        self.docs = docs
        log_event("search_index_opened", path=self.path, sessions=docs, rebuilt=rebuilt is not None)
        self._reconcile()
        with self._lock:
            self._ready.set()
            self._lock.notify_all()

    def _exchange(self, message: IndexJobs | CheckIndex) -> BatchResult:
        pipe, worker = self._pipe, self._worker
        if pipe is None or worker is None:
            raise _WorkerFailed("the indexing worker is not running")
        pipe.send(message)
        while not pipe.poll(1.0):
            if not worker.is_alive():
                raise _WorkerFailed(f"the indexing worker exited ({worker.exitcode})")
        reply: BatchDone = pipe.recv()
        return reply.result

    def _close_worker(self) -> None:
        pipe, worker = self._pipe, self._worker
        self._pipe = self._worker = None
        if pipe is not None:
            try:
                pipe.send(StopWorker())
            except OSError:
                pass
        if worker is not None:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
                worker.join(5)
        if pipe is not None:
            pipe.close()

    def _reconcile(self) -> None:
        """Queue what differs between the session index and the search index's versions."""
        conn = connect(self.path, write=False)
        try:
            states = read_states(conn)
        finally:
            conn.close()
        records = self._index.records()
        todo = [r for r in records if states.get(r.path, ("",))[0] != version_key(r.version)]
        todo.sort(key=lambda r: r.list_key)  # oldest first: newer sessions get greater doc ids
        served = {r.path for r in records}
        gone = [path for path in states if path not in served]
        with self._lock:
            for path in [*gone, *(r.path for r in todo)]:
                if path not in self._live:
                    self._backlog[path] = None
            queued = len(self._backlog)
            self._lock.notify_all()
        self._build = _Build(time.monotonic(), queued, self.totals.bytes_read)
        log_event("search_build_started", queued=queued, sessions=len(records), indexed=len(states))
        if not queued:
            self._build_done()

    def _take_batch(self) -> list[tuple[str, int | None]]:
        """Under the lock: live paths first, then the backlog, up to a batch's size."""
        taken: list[tuple[str, int | None]] = []
        size = 0
        while (self._live or self._backlog) and len(taken) < BATCH_SESSIONS and size < BATCH_BYTES:
            if self._live:
                path, seq = self._live.popitem(last=False)
                taken.append((path, seq))
            else:
                path, _ = self._backlog.popitem(last=False)
                taken.append((path, None))
            record = self._index.by_path(path)  # the index's lock is never held around ours
            size += record.size if record is not None else 0
        self._in_flight = taken
        return taken

    def _requeue_in_flight(self) -> None:
        """The worker died with a batch: its live paths wait again (the reconcile of the next
        worker finds the backlog's)."""
        with self._lock:
            for path, seq in self._in_flight:
                if seq is not None and path not in self._live:
                    self._live[path] = seq
            self._in_flight = []

    def _finish_batch(self, result: BatchResult, jobs: int, duration_s: float) -> None:
        with self._lock:
            self._batches += 1
            self.totals.add(result)
            self.docs = result.docs
            self._in_flight = []
            self._lock.notify_all()
        for error in result.errors[:1]:
            self.last_error = error
            log_event("search_index_error", logging.WARNING, error=error)
        if result.rebuilt is not None:
            self.rebuilds += 1
            log_event("search_index_rebuilt", logging.WARNING, reason=result.rebuilt)
            self._new_epoch()
            self._reconcile()
            return
        build = self._build
        if build is None:
            return
        now = time.monotonic()
        if not self._backlog and not self._live:
            self._build_done()
        elif now - build.logged_at >= PROGRESS_INTERVAL_S:
            build.logged_at = now
            log_event("search_progress", **self._progress(build, now))

    def _progress(self, build: _Build, now: float) -> dict[str, Any]:
        elapsed = max(now - build.started, 1e-6)
        read = self.totals.bytes_read - build.bytes_at_start
        return {
            "indexed": self.docs,
            "pending": self.pending,
            "bytes": read,
            "mb_per_s": round(read / 1e6 / elapsed, 1),
            "duration_ms": round(elapsed * 1000, 1),
        }

    def _build_done(self) -> None:
        build, self._build = self._build, None
        if build is not None:
            log_event(
                "search_built", queued=build.queued, **self._progress(build, time.monotonic())
            )

    # --- asked by the op ---------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._live) + len(self._backlog) + len(self._in_flight)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "available": self.unavailable is None,
                "reason": self.unavailable,
                "indexed": self.docs,
                "pending": self.pending if self._ready.is_set() else len(self._index),
                "building": self._build is not None or not self._ready.is_set(),
                "rebuilds": self.rebuilds,
                "worker_pid": self._worker.pid if self._worker is not None else None,
                "index_bytes": _file_bytes(self.path),
                "last_error": self.last_error,
                "since_start": self.totals.as_dict(),
            }

    def wait_caught_up(self, timeout: float) -> bool:
        """Block until every change told before this call is indexed; false on timeout."""
        with self._lock:
            target = self._seq
            deadline = time.monotonic() + timeout
            if not self._lock.wait_for(
                lambda: self._ready.is_set() or self.unavailable is not None, timeout
            ):
                return False

            def caught_up() -> bool:
                if any(seq <= target for seq in self._live.values()):
                    return False
                return not any(seq is not None and seq <= target for _, seq in self._in_flight)

            return self._lock.wait_for(
                lambda: caught_up() or self.unavailable is not None,
                max(0.0, deadline - time.monotonic()),
            )

    def search(self, match: str, workspace: str | None, limit: int, offset: int) -> dict[str, Any]:
        """Hits for an FTS5 MATCH expression (made by query.to_fts), best first."""
        if self.unavailable is not None:
            raise SearchUnavailable(self.unavailable)
        if not self._ready.is_set():
            raise SearchUnavailable("the search index is being opened")
        epoch, conn = self._reader()
        try:
            conn.execute("BEGIN")  # one snapshot for the ranking, the snippets and the count
            try:
                hits, total = run_query(conn, match, workspace, min(limit, MAX_LIMIT), offset)
            finally:
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            conn.close()
            if isinstance(exc, sqlite3.OperationalError) and "fts5" in str(exc).lower():
                # A query the translation let through: the index is fine, the query is not.
                log_event("search_query_refused", logging.WARNING, error=str(exc)[:200])
                raise SearchQueryRefused(f"cannot be searched ({exc})") from None
            with self._lock:
                self._check_asked = True
                self._lock.notify_all()
            raise SearchUnavailable(
                f"the search index cannot be read ({exc}); it is checked and rebuilt if damaged"
            ) from None
        self._readers.put((epoch, conn))
        with self._lock:
            return {"hits": hits, "total": total, "indexed": self.docs, "pending": self.pending}

    def _reader(self) -> tuple[int, sqlite3.Connection]:
        while True:
            try:
                epoch, conn = self._readers.get_nowait()
            except queue.Empty:
                return self._epoch, connect(self.path, write=False)
            if epoch == self._epoch:
                return epoch, conn
            conn.close()

    def _new_epoch(self) -> None:
        with self._lock:
            self._epoch += 1


class _WorkerFailed(Exception):
    pass


def _file_bytes(path: str) -> int:
    total = 0
    for name in (path, path + "-wal"):
        try:
            total += os.stat(name).st_size
        except OSError:
            pass
    return total
