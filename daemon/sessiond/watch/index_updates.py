"""Bringing the index up to date with the served folders: stat and read session files, read the
agent's databases, put what was found into the index, and tell the listeners. Runs on the
indexer thread only (the index's one writer)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import msgspec

from sessiond.index.change import Change
from sessiond.index.decode_pool import DecodePool
from sessiond.index.loader import HeaderLoader, Loaded, Outcome
from sessiond.index.records import SessionRecord, forget_workspace_keys, workspace_keys
from sessiond.index.store import SessionIndex
from sessiond.logs import log_event
from sessiond.store.follow import StoreSet
from sessiond.watch.folders import FolderSet
from sessiond.watch.listeners import Listeners
from sessiond.watch.listing import listings
from sessiond.watch.scan_report import Counts

RETRY_INTERVAL_S = 1.0  # reads deferred for want of descriptors or memory are tried this often
DANGLING_GRACE_S = 5.0  # a locator left after its row vanished is reported after this


class IndexUpdates:
    def __init__(
        self,
        index: SessionIndex,
        stores: StoreSet,
        folders: FolderSet,
        tell: Listeners,
        progress: Callable[[], None],
    ) -> None:
        self.index = index
        self._stores = stores  # the agent's databases
        self._folders = folders
        self._tell = tell
        self._progress = progress  # called after each step: the health check
        self.loader = HeaderLoader()
        self.pool = DecodePool(on_progress=progress)
        self.building = True  # no change notifications for what the initial build finds
        self._releasing = False  # re-reading the slots of vanished rows
        self._recheck: dict[str, float] = {}  # slots of vanished rows -> when to look again
        self._deferred: dict[str, None] = {}  # paths whose read hit EMFILE/ENFILE/ENOMEM
        self._retried_at = 0.0
        self._retrying: set[str] = set()  # the deferred paths being read again now

    @property
    def deferred(self) -> int:
        """Files whose read waits for descriptors or memory to be available again."""
        return len(self._deferred)

    def seconds_until_retry(self) -> float | None:
        return RETRY_INTERVAL_S if self._deferred else None

    def retry_deferred(self) -> None:
        """Read again the files whose read failed for want of descriptors or memory."""
        now = time.monotonic()
        if not self._deferred or now - self._retried_at < RETRY_INTERVAL_S:
            return
        self._retried_at = now
        paths, self._deferred = list(self._deferred), {}
        self._retrying = set(paths)
        try:
            for path in paths:
                self.refresh(path, Counts())
        finally:
            self._retrying = set()
        if not self._deferred:
            log_event("session_reads_resumed", files=len(paths))

    def recheck_locators(self, now: float) -> None:
        """A locator still there after its row vanished (and the grace): its row is gone."""
        for path in [p for p, due in self._recheck.items() if due <= now]:
            del self._recheck[path]
            if self._stores.is_locator_file(path):
                self._stores.locator_seen(path)

    def scan_folders(self, folders: list[str], counts: Counts) -> Counts:
        """Reconcile folders with the index: stat every session file, and decode the changed
        ones together (on every core when there are many). What a stat settles is applied
        folder by folder, so a restart holds a few folders' stat results at a time, not all."""
        to_decode: list[str] = []
        for listing in listings(folders):
            # The folder is listed first, then its database read: a locator listed always
            # has its row in the snapshot taken after (docs/storage.md).
            self.poll_store(listing.folder, counts, force=True)
            present = listing.stats
            indexed = {r.path: r for r in self.index.records_under(listing.folder)}
            for path in [*(indexed.keys() - present.keys()), *sorted(present)]:
                if self._stores.claims(path):  # a row holds the slot: its file is not read
                    counts.unchanged += 1
                    continue
                loaded = self.loader.without_decoding(path, indexed.get(path), present.get(path))
                if loaded is None:
                    to_decode.append(path)
                else:
                    self._apply(path, loaded, counts)
        if to_decode:
            decoded = self.loader.decode_many(to_decode, self.pool.decode_all)
            for path, loaded in zip(to_decode, decoded, strict=True):
                self._apply(path, loaded, counts)
        for folder in folders:
            self._tell.folder_scanned(folder)
        return counts

    def refresh(self, path: str, counts: Counts, reread: bool = False) -> None:
        """Bring the index up to date with the file at `path`, whatever state it is in."""
        folder = os.path.dirname(path)
        # The folder is checked to be in place before the read, and again if the file is not
        # found: a folder moved away unseen took its sessions with it, and one that came back
        # between the read and a single check would keep a file it still holds out of the index.
        if self._stores.claims(path):
            return  # a row holds the slot: the locator (or a legacy file) there does not count
        if self._folders.is_served(folder) and self._folders.verify(folder):
            loaded = self.loader.load(path, self.index.by_path(path), reread)
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
            self.poll_store(os.path.dirname(path), counts)
            if not self._releasing:  # a delete unlinks the locator right after the row
                self._stores.locator_seen(path)
        elif loaded.outcome is Outcome.MISSING:
            self._stores.file_gone(path)
        if self._stores.claims(path):
            counts.unchanged += 1  # a row holds this slot: the file beside it does not count
            return
        self._put(path, loaded, counts)

    def _put(self, path: str, loaded: Loaded, counts: Counts) -> None:
        """Put what was loaded from `path` into the index, count it, and tell of the change."""
        if loaded.outcome in (Outcome.UNCHANGED, Outcome.STILL_INVALID):
            counts.unchanged += 1
            return
        if loaded.outcome is Outcome.RETRY:
            # Out of descriptors or memory: the file is not gone, its record stays as it is
            # and it is read again later.
            counts.deferred += 1
            return
        if loaded.record is not None:
            if self.index.upsert(loaded.record) is None:
                counts.added += 1
            else:
                counts.updated += 1
            self.notify(Change.SAVED, loaded.record)
            return
        if loaded.outcome is Outcome.INVALID:
            counts.invalid += 1
            log_event("session_invalid", logging.WARNING, path=path, error=loaded.error)
        elif loaded.outcome is Outcome.UNREADABLE:
            log_event("session_unreadable", logging.WARNING, path=path, error=loaded.error)
        old = self.index.remove(path)
        if old is not None:
            counts.removed += 1
            self.notify(Change.REMOVED, old)

    def poll_store(self, folder: str, counts: Counts, force: bool = False) -> None:
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
            self.notify(Change.SAVED, record)
        for record in applied.removed:
            self.notify(Change.REMOVED, record)
        if not applied.released:
            return
        releasing, self._releasing = self._releasing, True  # this may run nested in a refresh
        try:
            for path in applied.released:  # a legacy file in the slot a row left counts again
                self.refresh(path, counts)
                self._recheck[path] = time.monotonic() + DANGLING_GRACE_S  # a locator left?
        finally:
            self._releasing = releasing

    def forget_folder(self, folder: str) -> None:
        """`folder` is no longer served: its database and its sessions leave the index."""
        self._stores.drop(folder)
        self.index.set_database_folder(folder, False)
        for record in self.index.remove_folder(folder):
            self.notify(Change.REMOVED, record)

    def rekey_workspaces(self) -> None:
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

    def notify(self, change: Change, record: SessionRecord) -> None:
        if not self.building:  # what the initial build finds is not news
            self._tell.changed(change, record)
