"""The indexer: the one thread that reads session files and changes the index.

Everything that changes the index goes through its queue in order: file events from the
watcher, registry pointers, folders appearing or vanishing, rescans, and the cookies of `sync`
barriers. Events for the same file in one batch are read once, so a burst of saves costs one
decode. Callers on other threads get futures.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from sessionctl.agent import (
    LISTING_CACHE_NAME,
    POINTER_SUFFIX,
    WORKSPACE_INDEX_NAME,
    is_session_file_name,
    pointer_target_dir,
)

from sessiond.index import header_cache
from sessiond.index.loader import HeaderLoader, Outcome
from sessiond.index.records import SessionRecord
from sessiond.index.store import SessionIndex
from sessiond.logs import log_event
from sessiond.watch.barrier import Barriers, is_cookie
from sessiond.watch.overflow import OverflowTracker
from sessiond.watch.roots import Discovery, Root, Source, root_key
from sessiond.watch.watcher import FolderWatcher, FsEvent

PENDING_CHECK_S = 2.0  # how often folders that do not exist yet are looked for
BATCH_MAX = 4096
CACHE_SAVE_INTERVAL_S = 60.0  # the persisted header cache is rewritten at most this often
RECONCILE_INTERVAL_S = 300.0  # a stat-only pass over every folder repairs anything missed

ChangeListener = Callable[[str, SessionRecord], None]


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: Future[Any]


@dataclass
class Counts:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    invalid: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Indexer:
    def __init__(
        self,
        index: SessionIndex,
        discovery: Discovery,
        state_dir: str | None = None,
        reconcile_interval_s: float = RECONCILE_INTERVAL_S,
    ) -> None:
        self._reconcile_interval = reconcile_interval_s
        self._reconciled_at = time.monotonic()
        self.index = index
        self._discovery = discovery
        self._state_dir = state_dir
        self._loader = HeaderLoader()
        self._building = True  # no change notifications for what the initial build finds
        self._cache_saved_seq = -1
        self._cache_saved_at = 0.0
        self._queue: queue.SimpleQueue[FsEvent | _Call | None] = queue.SimpleQueue()
        self._watcher = FolderWatcher(self._queue.put)
        self._barriers = Barriers()
        self._roots: dict[str, Root] = {}
        self._roots_lock = threading.Lock()
        self._listeners: list[ChangeListener] = []
        self._agent_file_hooks: list[Callable[[str], None]] = []
        self._folder_hooks: list[Callable[[str], None]] = []
        self._thread = threading.Thread(target=self._run, name="sessiond-indexer", daemon=True)
        self.ready = threading.Event()
        self.rescans = 0
        self._last_pending_check = 0.0
        self._overflows = OverflowTracker()

    # --- lifecycle (any thread) -----------------------------------------------------------

    def add_listener(self, listener: ChangeListener) -> None:
        """`listener(kind, record)` runs on the indexer thread for "saved" and "removed"."""
        self._listeners.append(listener)

    def add_agent_file_hook(self, hook: Callable[[str], None]) -> None:
        """`hook(path)` on the indexer thread, in event order, for every event on an agent
        sidecar (`.workspace_index.json`, `.listing_cache.json`) in a served folder."""
        self._agent_file_hooks.append(hook)

    def add_folder_hook(self, hook: Callable[[str], None]) -> None:
        """`hook(folder)` on the indexer thread after each (re)scan of a served folder."""
        self._folder_hooks.append(hook)

    def start(self) -> None:
        self._watcher.start()
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._watcher.stop()
        self._save_cache(force=True)

    def healthy(self) -> bool:
        return self._thread.is_alive() and self._watcher.healthy()

    # --- requests from other threads ------------------------------------------------------

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run `fn` on the indexer thread after everything queued before it."""
        future: Future[Any] = Future()
        self._queue.put(_Call(fn, future))
        return future

    def barrier(self) -> tuple[Future[None], Callable[[], None]]:
        """A future resolved once every change made before this call is in the index, and a
        function to call if the waiter gives up."""
        folders = self.watched_folders()
        cookies, failed = self._barriers.plant(folders)

        # Folders where no cookie can be written are reconciled instead; the queued call also
        # orders the barrier after pointers and pending folders already queued, and looks for
        # folders (the registry too) that appeared since the last pending check: they hold no
        # cookie, and a save that created them must be seen.
        def catch_up() -> None:
            self._check_pending()
            for folder in failed:
                self._scan_root(folder, Counts())

        queued = self.call(catch_up)
        done: Future[None] = Future()

        def settle(_: Future[Any]) -> None:
            if cookies.done() and queued.done() and not done.done():
                done.set_result(None)

        cookies.add_done_callback(settle)
        queued.add_done_callback(settle)
        return done, lambda: self._barriers.abandon(cookies)

    def ensure_root(self, folder: str) -> Future[bool]:
        """Serve `folder` (interface §2 source 4) if it is a folder; true when it is served."""
        return self.call(lambda: self._add_root(root_key(folder), Source.WORKSPACE))

    def rescan(self) -> Future[dict[str, int]]:
        return self.call(self._rescan_all)

    def watched_folders(self) -> list[str]:
        with self._roots_lock:
            folders = [r.path for r in self._roots.values() if r.watched]
        registry = self._discovery.registry
        if registry and self._watcher.is_watching(registry):
            folders.append(registry)
        return folders

    def roots(self) -> list[Root]:
        with self._roots_lock:
            return [Root(r.path, set(r.sources), r.watched) for r in self._roots.values()]

    def is_root(self, folder: str) -> bool:
        with self._roots_lock:
            return folder in self._roots

    # --- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        started = time.monotonic()
        if self._state_dir:
            self._loader = HeaderLoader(header_cache.load(self._state_dir))
        self._initial_build()
        self._loader.forget_cache()
        self._building = False
        log_event(
            "index_built",
            sessions=self.index.counts()["sessions"],
            roots=len(self._roots),
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        self.ready.set()
        self._guarded(self._save_cache)
        while True:
            try:
                item = self._queue.get(timeout=self._idle_timeout())
            except queue.Empty:
                self._guarded(self._check_pending)
                self._guarded(self._rescan_overflowed)
                self._periodic()
                continue
            batch = [item]
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if None in batch:
                return
            self._guarded(lambda b=batch: self._process(b))
            self._guarded(self._rescan_overflowed)
            if time.monotonic() - self._last_pending_check > PENDING_CHECK_S:
                self._guarded(self._check_pending)
            self._periodic()

    def _periodic(self) -> None:
        now = time.monotonic()
        if now - self._cache_saved_at > CACHE_SAVE_INTERVAL_S:
            self._guarded(self._save_cache)
        if self._reconcile_interval > 0 and now - self._reconciled_at > self._reconcile_interval:
            self._guarded(lambda: self._rescan_all("periodic"))

    def _idle_timeout(self) -> float:
        due = self._overflows.seconds_until_due(time.monotonic())
        return PENDING_CHECK_S if due is None else min(PENDING_CHECK_S, due)

    def _guarded(self, fn: Callable[[], Any]) -> None:
        # A bug in handling one batch must not stop indexing for good.
        try:
            fn()
        except Exception:
            log_event("indexer_error", logging.ERROR, exc_info=True)

    def _initial_build(self) -> None:
        for folder, source in self._discovery.initial():
            self._guarded(lambda f=folder, s=source: self._add_root(f, s))
        registry = self._discovery.registry
        if not registry:
            return
        cached_roots = self._loader.cached_roots()
        if not cached_roots:
            self._guarded(lambda: self._watch_registry(registry))
            return
        # A restart: serve the folders of the last run at once, and read the registry (one
        # file per session: slow with many) right after ready. Its watch starts now, so no
        # pointer written meanwhile is missed, and `sync` waits for the queued read.
        for folder in sorted(cached_roots):
            self._guarded(lambda f=folder: self._add_root(f, Source.REGISTRY))
        self._guarded(lambda: self._watch_registry(registry, read=False))
        self.call(lambda: self._read_registry(registry))

    def _process(self, batch: list[FsEvent | _Call | None]) -> None:
        changed: dict[str, None] = {}  # ordered set: each file is read once per batch

        def flush() -> None:
            for path in changed:
                self._refresh(path, Counts())
            changed.clear()

        for item in batch:
            if isinstance(item, _Call):
                flush()
                self._run_call(item)
            elif isinstance(item, FsEvent):
                if item.kind == "folder_gone":
                    flush()
                    self._folder_gone(item.path)
                elif item.kind == "overflow":
                    self._overflow(item.path)
                elif is_cookie(item.path):
                    if item.kind == "changed":
                        flush()
                        self._barriers.seen(item.path)
                elif item.path.endswith(POINTER_SUFFIX):
                    if item.kind == "changed":
                        flush()
                        self._read_pointer(item.path)
                elif os.path.basename(item.path) in (WORKSPACE_INDEX_NAME, LISTING_CACHE_NAME):
                    self._call_hooks(self._agent_file_hooks, item.path)
                elif is_session_file_name(os.path.basename(item.path)):
                    changed[item.path] = None
        flush()

    def _run_call(self, call: _Call) -> None:
        try:
            call.future.set_result(call.fn())
        except Exception as exc:
            log_event("indexer_error", logging.ERROR, exc_info=True)
            call.future.set_exception(exc)

    # --- folders --------------------------------------------------------------------------

    def _add_root(self, folder: str, source: Source) -> bool:
        with self._roots_lock:
            root = self._roots.get(folder)
            if root is None:
                root = self._roots[folder] = Root(folder)
            root.sources.add(source)
            if root.watched:
                return True
        if not os.path.isdir(folder):
            if source is Source.WORKSPACE and root.sources == {Source.WORKSPACE}:
                with self._roots_lock:
                    del self._roots[folder]  # asked about, but there is nothing to serve
            return False
        try:
            self._watcher.watch(folder)
        except OSError as exc:
            log_event("root_unwatchable", logging.ERROR, root=folder, error=str(exc))
            return False
        root.watched = True
        counts = self._scan_root(folder, Counts())
        log_event("root_added", root=folder, source=str(source), sessions=counts.added)
        return True

    def _watch_registry(self, registry: str, read: bool = True) -> None:
        if self._watcher.is_watching(registry) or not os.path.isdir(registry):
            return
        self._watcher.watch(registry)
        if read:
            self._read_registry(registry)

    def _read_registry(self, registry: str) -> None:
        # Many pointers name the same few folders: resolve each folder once.
        targets = {t for name in os.listdir(registry) if (t := self._pointer_target(name))}
        for target in sorted(targets):
            self._add_root(root_key(target), Source.REGISTRY)

    def _pointer_target(self, name: str) -> str | None:
        if not name.endswith(POINTER_SUFFIX) or self._discovery.registry is None:
            return None
        try:
            with open(os.path.join(self._discovery.registry, name), "rb") as fh:
                return pointer_target_dir(fh.read(64 * 1024))
        except OSError:
            return None

    def _read_pointer(self, path: str) -> None:
        if os.path.dirname(path) != self._discovery.registry:
            return
        target = self._pointer_target(os.path.basename(path))
        if target:
            self._add_root(root_key(target), Source.REGISTRY)

    def _folder_gone(self, folder: str) -> None:
        self._watcher.unwatch(folder)
        self._barriers.release_folder(folder)
        with self._roots_lock:
            root = self._roots.get(folder)
            if root is not None:
                root.watched = False
        for record in self.index.remove_root(folder):
            self._notify("removed", record)
        log_event("root_gone", root=folder)

    def _check_pending(self) -> None:
        self._last_pending_check = time.monotonic()
        with self._roots_lock:
            pending = [
                (r.path, next(iter(r.sources))) for r in self._roots.values() if not r.watched
            ]
        for folder, source in pending:
            if os.path.isdir(folder):
                self._add_root(folder, source)
        if self._discovery.registry:
            self._watch_registry(self._discovery.registry)

    # --- overflows ------------------------------------------------------------------------

    @property
    def overflows(self) -> int:
        return self._overflows.count

    def _overflow(self, folder: str) -> None:
        if self._overflows.overflowed(folder):
            log_event("overflow", logging.WARNING, count=self._overflows.count)

    def _rescan_overflowed(self) -> None:
        """Rescan the folders whose events were lost, when the backoff allows."""
        folders = self._overflows.take_due(time.monotonic())
        if not folders:
            return
        counts = Counts()
        for folder in sorted(folders):
            if self.is_root(folder):
                self._scan_root(folder, counts)
            elif folder == self._discovery.registry:
                self._read_registry(folder)
            self._barriers.release_folder(folder)  # its cookie events may be among the lost
        self.rescans += 1
        log_event("rescan", reason="overflow", folders=len(folders), **counts.as_dict())

    # --- files ----------------------------------------------------------------------------

    def _rescan_all(self, reason: str = "request") -> dict[str, int]:
        counts = Counts()
        started = time.monotonic()
        self._check_pending()
        for folder in [r.path for r in self.roots() if r.watched]:
            if os.path.isdir(folder):
                self._scan_root(folder, counts)
            else:  # removed or moved away without an event we could see
                self._folder_gone(folder)
        self.rescans += 1
        self._reconciled_at = time.monotonic()
        duration_ms = round((self._reconciled_at - started) * 1000, 1)
        log_event("rescan", reason=reason, duration_ms=duration_ms, **counts.as_dict())
        return counts.as_dict()

    def _scan_root(self, folder: str, counts: Counts) -> Counts:
        """Reconcile one folder with the index: stat every session file, read changed ones."""
        try:
            names = os.listdir(folder)
        except OSError:
            names = []
        present = {os.path.join(folder, n) for n in names if is_session_file_name(n)}
        for path in self.index.versions_under(folder).keys() - present:
            self._refresh(path, counts)
        for path in sorted(present):
            self._refresh(path, counts)
        self._call_hooks(self._folder_hooks, folder)
        return counts

    def _refresh(self, path: str, counts: Counts) -> None:
        """Bring the index up to date with the file at `path`, whatever state it is in."""
        folder = os.path.dirname(path)
        if not self.is_root(folder):
            return
        loaded = self._loader.load(path, folder, self.index.by_path(path))
        if loaded.outcome in (Outcome.UNCHANGED, Outcome.STILL_INVALID):
            counts.unchanged += 1
            return
        if loaded.record is not None:
            old = self.index.upsert(loaded.record)
            if old is None:
                counts.added += 1
            else:
                counts.updated += 1
            self._notify("saved", loaded.record)
            return
        if loaded.outcome is Outcome.INVALID:
            counts.invalid += 1
            log_event("session_invalid", logging.WARNING, path=path, error=loaded.error)
        elif loaded.outcome is Outcome.UNREADABLE:
            log_event("session_unreadable", logging.WARNING, path=path, error=loaded.error)
        old = self.index.remove(path)
        if old is not None:
            counts.removed += 1
            self._notify("removed", old)

    def _save_cache(self, force: bool = False) -> None:
        """Persist the header cache when the index changed since the last save."""
        self._cache_saved_at = time.monotonic()
        if not self._state_dir or (self.index.seq == self._cache_saved_seq and not force):
            return
        seq = self.index.seq
        try:
            header_cache.save(self._state_dir, self.index.records())
        except OSError as exc:
            log_event("header_cache_save_failed", logging.WARNING, error=str(exc))
            return
        self._cache_saved_seq = seq

    def _call_hooks(self, hooks: list[Callable[[str], None]], path: str) -> None:
        for hook in hooks:
            try:
                hook(path)
            except Exception:
                log_event("listener_error", logging.ERROR, exc_info=True)

    def _notify(self, kind: str, record: SessionRecord) -> None:
        if self._building:
            return
        for listener in self._listeners:
            try:
                listener(kind, record)
            except Exception:
                log_event("listener_error", logging.ERROR, exc_info=True)
