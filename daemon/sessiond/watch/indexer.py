"""The indexer: the one thread that reads session files and changes the index.

Everything that changes the index goes through its queue in order: file events from the
watcher, registry pointers, folders appearing or vanishing, rescans, and the cookies of `sync`
barriers. Events for the same file in one batch are read once, so a burst of saves costs one
decode. Callers on other threads get futures.

This module is the thread, its queue and what other threads may ask of it; where an event goes
is `routing`, how the index is brought up to date is `index_updates`.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from sessiond import trim_memory
from sessiond.config import DEFAULTS
from sessiond.index import header_cache
from sessiond.index.loader import HeaderLoader
from sessiond.index.store import SessionIndex
from sessiond.logs import log_event
from sessiond.store.follow import SHARED, StoreSet
from sessiond.watch.barrier import Barriers, when_all
from sessiond.watch.folders import FolderSet
from sessiond.watch.fs_event import FsEvent, FsKind
from sessiond.watch.index_updates import IndexUpdates
from sessiond.watch.listeners import ChangeListener, Listeners, RescanListener
from sessiond.watch.listing import undecodable
from sessiond.watch.overflow import OverflowTracker
from sessiond.watch.queue_items import STOP, Call, QueueItem, Stop
from sessiond.watch.routing import PendingReads, Route, owns_workspace, route
from sessiond.watch.scan_report import Counts, RescanReason, RescanSummary
from sessiond.watch.served import Discovery, ServedFolder, Source
from sessiond.watch.watcher import FolderWatcher

PENDING_CHECK_S = 2.0  # how often folders that do not exist yet are looked for
BATCH_MAX = 4096
CACHE_SAVE_INTERVAL_S = 60.0  # the persisted header cache is rewritten at most this often
RECONCILE_INTERVAL_S = DEFAULTS.reconcile_interval_s  # a stat-only pass repairs what was missed
STALL_S = 120.0
"""The indexer is unhealthy when it has work and has not finished a step of it for this long:
a live thread that makes no progress serves a stale index as surely as a dead one. A step is
one file read and applied, one call, or one batch of events; the largest file the agent can
load (512 MiB) decodes in seconds."""


class Indexer:
    def __init__(
        self,
        index: SessionIndex,
        discovery: Discovery,
        state_dir: str | None = None,
        reconcile_interval_s: float = RECONCILE_INTERVAL_S,
        stores: StoreSet | None = None,
    ) -> None:
        self._stores = SHARED if stores is None else stores  # the agent's databases
        self._reconcile_interval = reconcile_interval_s
        self._reconciled_at = time.monotonic()
        self.index = index
        self._discovery = discovery
        self._state_dir = state_dir
        self._to_build: list[str] = []  # folders the initial build scans together
        self._cache = header_cache.CacheKeeper(state_dir, index, CACHE_SAVE_INTERVAL_S)
        self._queue: queue.SimpleQueue[QueueItem] = queue.SimpleQueue()
        self._watcher = FolderWatcher(self._queue.put)
        self._barriers = Barriers()
        self._folders = FolderSet(
            self._watcher, discovery, self._scan_new_folder, self._forget_folder, self._confine
        )
        self._tell = Listeners()
        self._updates = IndexUpdates(index, self._stores, self._folders, self._tell, self._progress)
        self._thread = threading.Thread(target=self._run, name="sessiond-indexer", daemon=True)
        self.ready = threading.Event()
        self.rescans = 0
        self._last_pending_check = 0.0
        self._overflows = OverflowTracker()
        self.stall_s = STALL_S
        self._progress_at = time.monotonic()  # when the thread last finished a step
        self._busy = False  # whether it is working on something (not waiting for work)

    # --- lifecycle (any thread) -----------------------------------------------------------

    def add_listener(self, listener: ChangeListener) -> None:
        """`listener(change, record)` runs on the indexer thread for each session saved or
        removed."""
        self._tell.changes.append(listener)

    def add_rescan_listener(self, listener: RescanListener) -> None:
        """`listener(summary)` on the indexer thread after each rescan (its reason and counts)."""
        self._tell.rescans.append(listener)

    def add_agent_file_hook(self, hook: Callable[[str], None]) -> None:
        """`hook(path)` on the indexer thread, in event order, for every event on an agent
        sidecar (`.workspace_index.json`, `.listing_cache.json`) in a served folder."""
        self._tell.agent_files.append(hook)

    def add_folder_hook(self, hook: Callable[[str], None]) -> None:
        """`hook(folder)` on the indexer thread after each (re)scan of a served folder."""
        self._tell.folders.append(hook)

    def start(self) -> None:
        self._watcher.start()
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(STOP)
        self._thread.join(timeout=10)
        self._watcher.stop()
        self._cache.save(force=True)
        self._stores.close()

    def healthy(self) -> bool:
        """Alive, and making progress: busy on one step for `stall_s` is as bad as dead."""
        if not (self._thread.is_alive() and self._watcher.healthy()):
            return False
        return not self._busy or time.monotonic() - self._progress_at < self.stall_s

    def stalled_for(self) -> float:
        """Seconds the indexer has been busy without finishing a step (0 when waiting)."""
        return time.monotonic() - self._progress_at if self._busy else 0.0

    def _progress(self) -> None:
        self._progress_at = time.monotonic()

    @property
    def deferred(self) -> int:
        """Files whose read waits for descriptors or memory to be available again."""
        return self._updates.deferred

    # --- requests from other threads ------------------------------------------------------

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run `fn` on the indexer thread after everything queued before it."""
        future: Future[Any] = Future()
        self._queue.put(Call(fn, future))
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
        # Polled folders hold no cookie either: they are looked at now.
        def catch_up() -> None:
            for folder in folders:  # a folder moved unseen holds a cookie no event will show
                self._folders.verify(folder)
            self._check_pending()
            for folder in [*failed, *self._folders.poll(force=True)]:
                if self._folders.verify(folder):
                    self._scan_folder(folder, Counts())
            # A folder no longer watched (gone, or dormant, since the cookie was planted)
            # gives no cookie event: nothing in it is served, so nothing is waited for there.
            for folder in folders:
                if not self._watcher.is_watching(folder):
                    self._barriers.release_folder(folder)
            for folder in self._stores.folders():  # a commit need not have shown an event yet
                self._updates.poll_store(folder, Counts())

        done = when_all(cookies, self.call(catch_up))
        return done, lambda: self._barriers.abandon(cookies)

    def ensure_served(self, folder: str) -> Future[bool]:
        """Serve `folder` for a workspace asked about (docs/protocol.md, "status": `sources`)
        if it is a folder; true when it is served."""
        return self.call(lambda: self._folders.add(folder, Source.WORKSPACE))

    def serve_configured(self, folder: str) -> Future[bool]:
        """Serve a folder the configuration names (a SIGHUP added it)."""
        return self.call(lambda: self._folders.add(folder, Source.CONFIG))

    def unserve_configured(self, folder: str) -> Future[None]:
        """The configuration no longer names `folder` (a SIGHUP removed it)."""
        return self.call(lambda: self._folders.withdraw(Source.CONFIG, folder))

    def refresh(self, path: str) -> Future[None]:
        """Read `path` again now: a reader found it other than the index says (a change no
        event told of, such as a write through a hard link in another folder)."""
        return self.call(lambda: self._updates.refresh(path, Counts()))

    def rescan(self) -> Future[Counts]:
        return self.call(lambda: self._rescan_all(RescanReason.REQUEST))

    def watched_folders(self) -> list[str]:
        return self._folders.watched()

    def served_folders(self) -> list[ServedFolder]:
        return self._folders.served_folders()

    def is_served(self, folder: str) -> bool:
        return self._folders.is_served(folder)

    @property
    def registry_polled(self) -> bool:
        return self._folders.registry_polled

    def store_status(self) -> dict[str, Any]:
        """The agent databases served, each with its state, and the dangling locators."""
        dangling = self._stores.dangling()
        return {"stores": self._stores.status(), "dangling_locators": len(dangling),
                "dangling_examples": dangling[:10]}  # fmt: skip

    # --- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        self._busy = True
        started = time.monotonic()
        if self._state_dir:
            self._updates.loader = HeaderLoader(header_cache.load(self._state_dir))
        self._initial_build()
        self._updates.loader.forget_cache()
        self._updates.building = False
        log_event(
            "index_built",
            sessions=self.index.counts().sessions,
            roots=len(self._folders.served_folders()),
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        self.ready.set()
        self._guarded(self._cache.save)
        while True:
            self._busy = False
            try:
                item = self._queue.get(timeout=self._idle_timeout())
            except queue.Empty:
                self._busy = True
                self._progress()
                self._guarded(self._check_pending)
                self._guarded(self._poll)
                self._guarded(self._rescan_overflowed)
                self._guarded(self._updates.retry_deferred)
                self._guarded(self._periodic)
                continue
            self._busy = True
            self._progress()
            batch = [item]
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(isinstance(item, Stop) for item in batch):
                return
            self._guarded(functools.partial(self._process, batch))
            self._guarded(self._poll)
            self._guarded(self._rescan_overflowed)
            self._guarded(self._updates.retry_deferred)
            if time.monotonic() - self._last_pending_check > PENDING_CHECK_S:
                self._guarded(self._check_pending)
            self._guarded(self._periodic)

    def _periodic(self) -> None:
        now = time.monotonic()
        self._updates.recheck_locators(now)
        for folder in self._stores.due_folders(now):  # the slow timer, and failure retries
            if self.is_served(folder):
                self._updates.poll_store(folder, Counts())
        if self._cache.due(now):
            self._guarded(self._cache.save)
        if self._reconcile_interval > 0 and now - self._reconciled_at > self._reconcile_interval:
            self._guarded(lambda: self._rescan_all(RescanReason.PERIODIC))

    def _idle_timeout(self) -> float:
        now = time.monotonic()
        dues = [
            self._overflows.seconds_until_due(now),
            self._folders.seconds_until_poll(now),
            self._updates.seconds_until_retry(),
        ]
        return min([PENDING_CHECK_S, *(d for d in dues if d is not None)])

    def _poll(self) -> None:
        """Scan the polled folders whose stat changed (docs/protocol.md, "status")."""
        for folder in self._folders.poll():
            if self._folders.verify(folder):
                self._scan_folder(folder, Counts())

    def _guarded(self, fn: Callable[[], Any]) -> None:
        # A bug in handling one batch must not stop indexing for good.
        try:
            fn()
        except Exception:
            log_event("indexer_error", logging.ERROR, exc_info=True)

    def _initial_build(self) -> None:
        self._add_initial_folders()
        try:
            self._guarded(lambda: self._scan_folders(self._to_build, Counts()))
        finally:
            self._to_build = []
            self._updates.pool.close()
        self._guarded(self._updates.rekey_workspaces)  # cached headers keep old symlink resolutions

    def _add_initial_folders(self) -> None:
        for folder, source in self._discovery.initial():
            self._guarded(functools.partial(self._folders.add, folder, source))
        if not self._folders.registry:
            return
        cached_folders = self._updates.loader.cached_folders()
        if not cached_folders:
            self._guarded(lambda: self._folders.watch_registry(read=True))
            return
        # A restart: serve the folders of the last run at once, and read the registry (one
        # file per session: slow with many) right after ready. Its watch starts now, so no
        # pointer written meanwhile is missed, and `sync` waits for the queued read, which
        # drops the folders of the last run that no pointer names any more.
        cached_folders -= {f for f, _ in self._discovery.initial()}
        for folder in sorted(cached_folders):
            self._guarded(functools.partial(self._folders.add, folder, Source.REGISTRY))
        self._guarded(lambda: self._folders.watch_registry(read=False))
        self.call(self._folders.read_registry)

    def _process(self, batch: list[QueueItem]) -> None:
        pending = PendingReads()

        def flush() -> None:
            databases, files = pending.take()
            for folder in databases:
                if self.is_served(folder):
                    self._updates.poll_store(folder, Counts())
            for path, reread in files:
                self._updates.refresh(path, Counts(), reread)

        for item in batch:
            self._progress()
            if isinstance(item, Call):
                flush()
                self._run_call(item)
            elif isinstance(item, FsEvent):
                self._route(item, pending, flush)
        flush()

    def _route(self, event: FsEvent, pending: PendingReads, flush: Callable[[], None]) -> None:
        """Act on one event; what must see the effect of the reads noted so far flushes first."""
        where = route(event)
        if where is Route.FOLDER_GONE:
            flush()
            self._folders.gone(event.path, deleted=event.kind is FsKind.FOLDER_DELETED)
        elif where is Route.FOLDER_ATTRIB:
            # Its mode may have changed: a folder readable again is read again now.
            flush()
            if self.is_served(event.path) and self._folders.verify(event.path):
                self._scan_folder(event.path, Counts())
        elif where is Route.OVERFLOW:
            self._overflow(event.path)
        elif where is Route.COOKIE:
            # A cookie in a folder that lost events waits for that folder's rescan.
            if not self._overflows.has(event.path):
                flush()
                self._barriers.seen(event.path)
        elif where is Route.POINTER:
            flush()
            self._folders.read_pointer(event.path)
        elif where is Route.AGENT_FILE:
            self._tell.agent_file(event.path)
        elif where is Route.UNDECODABLE:
            undecodable(event.path)
        else:
            pending.add(where, event)

    def _run_call(self, call: Call) -> None:
        try:
            call.future.set_result(call.fn())
        except Exception as exc:
            log_event("indexer_error", logging.ERROR, exc_info=True)
            call.future.set_exception(exc)

    # --- folders --------------------------------------------------------------------------

    def _check_pending(self) -> None:
        self._last_pending_check = time.monotonic()
        self._folders.check_pending()

    def _scan_new_folder(self, folder: str) -> int | None:
        if self._updates.building:  # the initial build scans all its folders together, later
            self._to_build.append(folder)
            return None
        mark = self._barriers.mark()  # the watch is in place: cookies from now give events
        added = self._scan_folder(folder, Counts()).added
        self._barriers.release_folder(folder, before=mark)  # made unwatched, but scanned now
        return added

    def _confine(self, folder: str, confined: bool) -> None:
        """A folder served only because workspaces were asked about answers only the
        workspaces whose sessions folder it is by the agent's rules (docs/protocol.md, "status")."""
        if not confined:
            self.index.confine(folder, None)
            return
        self.index.confine(folder, owns_workspace(folder, self._discovery.env))

    def _forget_folder(self, folder: str) -> None:
        self._barriers.release_folder(folder)
        self._updates.forget_folder(folder)

    # --- overflows ------------------------------------------------------------------------

    @property
    def overflows(self) -> int:
        return self._overflows.count

    def _overflow(self, folder: str) -> None:
        if self._overflows.overflowed(folder):
            log_event("overflow", logging.WARNING, count=self._overflows.count)

    def _rescan_overflowed(self) -> None:
        """Rescan the folders whose events were lost, when the backoff allows."""
        urgent = self._barriers.held(self._overflows.pending())
        folders = self._overflows.take_due(time.monotonic(), urgent)
        if not folders:
            return
        counts = Counts()
        for folder in sorted(folders):
            mark = self._barriers.mark()
            if self.is_served(folder) and self._folders.verify(folder):
                self._scan_folder(folder, counts)
            elif folder == self._folders.registry:
                self._folders.read_registry()
            # Its cookies' events may be among the lost, or held back: the scan covers them.
            self._barriers.release_folder(folder, before=mark)
        self.rescans += 1
        self._tell.rescanned(RescanSummary(RescanReason.OVERFLOW, counts, folders=len(folders)))

    # --- rescans --------------------------------------------------------------------------

    def _rescan_all(self, reason: RescanReason) -> Counts:
        counts = Counts()
        started = time.monotonic()
        self._folders.read_registry()  # drops the folders no pointer names any more
        self._folders.resolve_all()  # follows folders whose path leads elsewhere now
        present = []
        for folder in [r.path for r in self.served_folders() if r.watched or r.polled]:
            if os.path.isdir(folder):
                present.append(folder)
            else:  # removed or moved away without an event we could see
                self._folders.gone(folder, deleted=True)
        try:
            self._scan_folders(present, counts)
        finally:
            self._updates.pool.close()
        self._updates.rekey_workspaces()
        self.rescans += 1
        trim_memory.trim()
        self._reconciled_at = time.monotonic()
        duration_ms = round((self._reconciled_at - started) * 1000, 1)
        self._tell.rescanned(RescanSummary(reason, counts, duration_ms=duration_ms))
        return counts

    def _scan_folder(self, folder: str, counts: Counts) -> Counts:
        return self._scan_folders([folder], counts)

    def _scan_folders(self, folders: list[str], counts: Counts) -> Counts:
        return self._updates.scan_folders(folders, counts)
