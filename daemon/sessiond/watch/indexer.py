"""The indexer: the one thread that reads session files and changes the index.

Everything that changes the index goes through its queue in order: file events from the
watcher, registry pointers, folders appearing or vanishing, rescans, and the cookies of `sync`
barriers. Events for the same file in one batch are read once, so a burst of saves costs one
decode. Callers on other threads get futures.
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

import msgspec
from sessionctl.agent import (
    LISTING_CACHE_NAME,
    POINTER_SUFFIX,
    WORKSPACE_INDEX_NAME,
    canonicalize,
    is_session_file_name,
    is_utf8_name,
    workspace_sessions_dir,
)

from sessiond import trim_memory
from sessiond.index import header_cache
from sessiond.index.decode_pool import DecodePool
from sessiond.index.loader import HeaderLoader, Loaded, Outcome
from sessiond.index.records import SessionRecord, forget_workspace_keys, workspace_keys
from sessiond.index.store import SessionIndex
from sessiond.logs import log_event
from sessiond.store.follow import SHARED, StoreSet, is_database_event
from sessiond.watch.barrier import Barriers, is_cookie, when_all
from sessiond.watch.folders import FolderSet
from sessiond.watch.listeners import ChangeListener, Listeners
from sessiond.watch.listing import listings, undecodable
from sessiond.watch.overflow import OverflowTracker
from sessiond.watch.served import Discovery, ServedFolder, Source, folder_key
from sessiond.watch.watcher import FolderWatcher, FsEvent
from sessiond.watch.work import Call, Counts, apply_loaded

PENDING_CHECK_S = 2.0  # how often folders that do not exist yet are looked for
BATCH_MAX = 4096
CACHE_SAVE_INTERVAL_S = 60.0  # the persisted header cache is rewritten at most this often
RECONCILE_INTERVAL_S = 300.0  # a stat-only pass over every folder repairs anything missed
RETRY_INTERVAL_S = 1.0  # reads deferred for want of descriptors or memory are tried this often
STALL_S = 120.0
"""The indexer is unhealthy when it has work and has not finished a step of it for this long:
a live thread that makes no progress serves a stale index as surely as a dead one. A step is
one file read and applied, one call, or one batch of events; the largest file the agent can
load (512 MiB) decodes in seconds."""
DANGLING_GRACE_S = 5.0  # a locator left after its row vanished is reported after this


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
        self._releasing = False  # re-reading the slots of vanished rows
        self._recheck: dict[str, float] = {}  # slots of vanished rows -> when to look again
        self._reconcile_interval = reconcile_interval_s
        self._reconciled_at = time.monotonic()
        self.index = index
        self._discovery = discovery
        self._state_dir = state_dir
        self._loader = HeaderLoader()
        self._crawl = DecodePool(on_progress=self._progress)
        self._to_crawl: list[str] = []
        self._building = True  # no change notifications for what the initial build finds
        self._cache = header_cache.CacheKeeper(state_dir, index, CACHE_SAVE_INTERVAL_S)
        self._queue: queue.SimpleQueue[FsEvent | Call | None] = queue.SimpleQueue()
        self._watcher = FolderWatcher(self._queue.put)
        self._barriers = Barriers()
        self._folders = FolderSet(
            self._watcher, discovery, self._scan_new_folder, self._forget_folder, self._confine
        )
        self._tell = Listeners()
        self._thread = threading.Thread(target=self._run, name="sessiond-indexer", daemon=True)
        self.ready = threading.Event()
        self.rescans = 0
        self._last_pending_check = 0.0
        self._overflows = OverflowTracker()
        self._deferred: dict[str, None] = {}  # paths whose read hit EMFILE/ENFILE/ENOMEM
        self._retried_at = 0.0
        self._retrying: set[str] = set()  # the deferred paths being read again now
        self.stall_s = STALL_S
        self._progress_at = time.monotonic()  # when the thread last finished a step
        self._busy = False  # whether it is working on something (not waiting for work)

    # --- lifecycle (any thread) -----------------------------------------------------------

    def add_listener(self, listener: ChangeListener) -> None:
        """`listener(kind, record)` runs on the indexer thread for "saved" and "removed"."""
        self._tell.changes.append(listener)

    def add_rescan_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
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
        self._queue.put(None)
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
        return len(self._deferred)

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
                self._poll_store(folder, Counts())

        done = when_all(cookies, self.call(catch_up))
        return done, lambda: self._barriers.abandon(cookies)

    def ensure_served(self, folder: str) -> Future[bool]:
        """Serve `folder` (interface §2 source 4) if it is a folder; true when it is served."""
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
        return self.call(lambda: self._refresh(path, Counts()))

    def rescan(self) -> Future[dict[str, int]]:
        return self.call(self._rescan_all)

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
            self._loader = HeaderLoader(header_cache.load(self._state_dir))
        self._initial_build()
        self._loader.forget_cache()
        self._building = False
        log_event(
            "index_built",
            sessions=self.index.counts()["sessions"],
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
                self._guarded(self._retry_deferred)
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
            if None in batch:
                return
            self._guarded(functools.partial(self._process, batch))
            self._guarded(self._poll)
            self._guarded(self._rescan_overflowed)
            self._guarded(self._retry_deferred)
            if time.monotonic() - self._last_pending_check > PENDING_CHECK_S:
                self._guarded(self._check_pending)
            self._guarded(self._periodic)

    def _periodic(self) -> None:
        now = time.monotonic()
        for path in [p for p, due in self._recheck.items() if due <= now]:
            del self._recheck[path]
            if self._stores.is_locator_file(path):  # still there: its row is gone for good
                self._stores.locator_seen(path)
        for folder in self._stores.due_folders(now):  # the slow timer, and failure retries
            if self.is_served(folder):
                self._poll_store(folder, Counts())
        if self._cache.due(now):
            self._guarded(self._cache.save)
        if self._reconcile_interval > 0 and now - self._reconciled_at > self._reconcile_interval:
            self._guarded(lambda: self._rescan_all("periodic"))

    def _idle_timeout(self) -> float:
        now = time.monotonic()
        dues = [self._overflows.seconds_until_due(now), self._folders.seconds_until_poll(now)]
        if self._deferred:
            dues.append(RETRY_INTERVAL_S)
        return min([PENDING_CHECK_S, *(d for d in dues if d is not None)])

    def _poll(self) -> None:
        """Scan the polled folders whose stat changed (docs/protocol.md, "status")."""
        for folder in self._folders.poll():
            if self._folders.verify(folder):
                self._scan_folder(folder, Counts())

    def _retry_deferred(self) -> None:
        """Read again the files whose read failed for want of descriptors or memory."""
        now = time.monotonic()
        if not self._deferred or now - self._retried_at < RETRY_INTERVAL_S:
            return
        self._retried_at = now
        paths, self._deferred = list(self._deferred), {}
        self._retrying = set(paths)
        try:
            for path in paths:
                self._refresh(path, Counts())
        finally:
            self._retrying = set()
        if not self._deferred:
            log_event("session_reads_resumed", files=len(paths))

    def _guarded(self, fn: Callable[[], Any]) -> None:
        # A bug in handling one batch must not stop indexing for good.
        try:
            fn()
        except Exception:
            log_event("indexer_error", logging.ERROR, exc_info=True)

    def _initial_build(self) -> None:
        self._add_initial_folders()
        try:
            self._guarded(lambda: self._scan_folders(self._to_crawl, Counts()))
        finally:
            self._to_crawl = []
            self._crawl.close()
        self._guarded(self._rekey_workspaces)  # cached headers keep old symlink resolutions

    def _add_initial_folders(self) -> None:
        for folder, source in self._discovery.initial():
            self._guarded(functools.partial(self._folders.add, folder, source))
        if not self._folders.registry:
            return
        cached_folders = self._loader.cached_folders()
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

    def _process(self, batch: list[FsEvent | Call | None]) -> None:
        changed: dict[str, None] = {}  # ordered set: each file is read once per batch
        reread: set[str] = set()  # of those, the ones whose mode may have changed
        databases: dict[str, None] = {}  # folders whose database may have a commit: one check

        def flush() -> None:
            for folder in databases:
                if self.is_served(folder):
                    self._poll_store(folder, Counts())
            databases.clear()
            for path in changed:
                self._refresh(path, Counts(), path in reread)
            changed.clear()
            reread.clear()

        for item in batch:
            self._progress()
            if isinstance(item, Call):
                flush()
                self._run_call(item)
            elif isinstance(item, FsEvent):
                if item.kind in ("folder_gone", "folder_deleted"):
                    flush()
                    self._folders.gone(item.path, deleted=item.kind == "folder_deleted")
                elif item.kind == "folder_attrib":
                    # Its mode may have changed: a folder readable again is read again now.
                    flush()
                    if self.is_served(item.path) and self._folders.verify(item.path):
                        self._scan_folder(item.path, Counts())
                elif item.kind == "overflow":
                    self._overflow(item.path)
                elif is_cookie(item.path):
                    # A cookie in a folder that lost events waits for that folder's rescan.
                    if item.kind == "changed" and not self._overflows.has(item.path):
                        flush()
                        self._barriers.seen(item.path)
                elif item.path.endswith(POINTER_SUFFIX):
                    if item.kind == "changed":
                        flush()
                        self._folders.read_pointer(item.path)
                elif os.path.basename(item.path) in (WORKSPACE_INDEX_NAME, LISTING_CACHE_NAME):
                    self._tell.agent_file(item.path)
                elif is_database_event(os.path.basename(item.path)):
                    databases[os.path.dirname(item.path)] = None
                elif is_session_file_name(os.path.basename(item.path)):
                    if not is_utf8_name(item.path):
                        undecodable(item.path)
                        continue
                    changed[item.path] = None
                    if item.kind == "attrib":
                        reread.add(item.path)
        flush()

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
        if self._building:  # the initial build scans all its folders together, afterwards
            self._to_crawl.append(folder)
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
        env = self._discovery.env
        judged: dict[str, bool] = {}

        def allows(workspace: str) -> bool:
            verdict = judged.get(workspace)
            if verdict is None:
                own = workspace_sessions_dir(canonicalize(workspace), env)
                verdict = judged[workspace] = folder_key(own) == folder
            return verdict

        self.index.confine(folder, allows)

    def _rekey_workspaces(self) -> None:
        """Judge every session's workspace again: a symlink in its directory may lead
        elsewhere now. Each directory is resolved once."""
        forget_workspace_keys()
        resolved: dict[str | None, tuple[str, ...]] = {}
        for record in self.index.records():
            keys = resolved.get(record.directory)
            if keys is None:
                keys = resolved[record.directory] = workspace_keys(record.directory)
            if keys != record.workspaces:
                self.index.upsert(msgspec.structs.replace(record, workspaces=keys))

    def _forget_folder(self, folder: str) -> None:
        self._barriers.release_folder(folder)
        self._stores.drop(folder)
        self.index.set_database_folder(folder, False)
        for record in self.index.remove_folder(folder):
            self._notify("removed", record)

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
        self._tell.rescanned({"reason": "overflow", "folders": len(folders), **counts.as_dict()})

    # --- files ----------------------------------------------------------------------------

    def _rescan_all(self, reason: str = "request") -> dict[str, int]:
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
            self._crawl.close()
        self._rekey_workspaces()
        self.rescans += 1
        trim_memory.trim()
        self._reconciled_at = time.monotonic()
        duration_ms = round((self._reconciled_at - started) * 1000, 1)
        self._tell.rescanned({"reason": reason, "duration_ms": duration_ms, **counts.as_dict()})
        return counts.as_dict()

    def _scan_folder(self, folder: str, counts: Counts) -> Counts:
        return self._scan_folders([folder], counts)

    def _scan_folders(self, folders: list[str], counts: Counts) -> Counts:
        """Reconcile folders with the index: stat every session file, and decode the changed
        ones together (on every core when there are many). What a stat settles is applied
        folder by folder, so a restart holds a few folders' stat results at a time, not all."""
        to_decode: list[str] = []
        for listing in listings(folders):
            # The folder is listed first, then its database read: a locator listed always
            # has its row in the snapshot taken after (docs/storage.md).
            self._poll_store(listing.folder, counts, force=True)
            present = listing.stats
            indexed = {r.path: r for r in self.index.records_under(listing.folder)}
            for path in [*(indexed.keys() - present.keys()), *sorted(present)]:
                if self._stores.claims(path):  # a row holds the slot: its file is not read
                    counts.unchanged += 1
                    continue
                loaded = self._loader.without_decoding(path, indexed.get(path), present.get(path))
                if loaded is None:
                    to_decode.append(path)
                else:
                    self._apply(path, loaded, counts)
        if to_decode:
            decoded = self._loader.decode_many(to_decode, self._crawl.decode_all)
            for path, loaded in zip(to_decode, decoded, strict=True):
                self._apply(path, loaded, counts)
        for folder in folders:
            self._tell.folder_scanned(folder)
        return counts

    def _refresh(self, path: str, counts: Counts, reread: bool = False) -> None:
        """Bring the index up to date with the file at `path`, whatever state it is in."""
        folder = os.path.dirname(path)
        # The folder is checked to be in place before the read, and again if the file is not
        # found: a folder moved away unseen took its sessions with it, and one that came back
        # between the read and a single check would keep a file it still holds out of the index.
        if self._stores.claims(path):
            return  # a row holds the slot: the locator (or a legacy file) there does not count
        if self.is_served(folder) and self._folders.verify(folder):
            loaded = self._loader.load(path, self.index.by_path(path), reread)
            if loaded.outcome is not Outcome.MISSING or self._folders.verify(folder):
                self._apply(path, loaded, counts)

    def _apply(self, path: str, loaded: Loaded, counts: Counts) -> None:
        self._progress()
        if loaded.outcome is Outcome.RETRY:
            if path not in self._deferred and path not in self._retrying:
                log_event("session_read_deferred", logging.WARNING, path=path, error=loaded.error)
            self._deferred[path] = None
        if loaded.outcome is Outcome.LOCATOR:
            # Its row is committed before it is published: read the database first.
            self._poll_store(os.path.dirname(path), counts)
            if not self._releasing:  # a delete unlinks the locator right after the row
                self._stores.locator_seen(path)
        elif loaded.outcome is Outcome.MISSING:
            self._stores.file_gone(path)
        if self._stores.claims(path):
            counts.unchanged += 1  # a row holds this slot: the file beside it does not count
            return
        change = apply_loaded(self.index, path, loaded, counts)
        if change is not None:
            self._notify(*change)

    def _poll_store(self, folder: str, counts: Counts, force: bool = False) -> None:
        """Bring the index up to date with `folder`'s database, if it has one."""

        def upsert(record: SessionRecord) -> SessionRecord | None:
            old = self.index.upsert(record)
            if old is None:
                counts.added += 1
            else:
                counts.updated += 1
            return old

        def remove(path: str) -> SessionRecord | None:
            old = self.index.remove(path)
            counts.removed += old is not None
            return old

        applied = self._stores.poll(folder, upsert, remove, force)
        self.index.set_database_folder(folder, self._stores.has_database(folder))
        for record in applied.saved:
            self._notify("saved", record)
        for record in applied.removed:
            self._notify("removed", record)
        if not applied.released:
            return
        releasing, self._releasing = self._releasing, True  # this may run nested in a refresh
        try:
            for path in applied.released:  # a legacy file in the slot a row left counts again
                self._refresh(path, counts)
                self._recheck[path] = time.monotonic() + DANGLING_GRACE_S  # a locator left?
        finally:
            self._releasing = releasing

    def _notify(self, kind: str, record: SessionRecord) -> None:
        if not self._building:  # what the initial build finds is not news
            self._tell.changed(kind, record)
