"""The sessions folders being served: which there are and why, which are watched, and the
agent's location registry that names new ones (interface §2).

Used on the indexer thread, except the read-only questions, which any thread may ask. A folder
that does not exist (yet) stays pending and is looked for again; one that vanishes goes back
to pending.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from sessionctl.agent import POINTER_SUFFIX, pointer_target_dir, read_pointer

from sessiond.logs import log_event
from sessiond.watch.roots import Discovery, Root, Source, root_key
from sessiond.watch.watcher import FolderWatcher


class FolderSet:
    def __init__(
        self,
        watcher: FolderWatcher,
        discovery: Discovery,
        scan: Callable[[str], int | None],
        forget: Callable[[str], None],
    ) -> None:
        """`scan(folder)` indexes a newly watched folder (returns the sessions added, or None
        when the scan is deferred to the initial crawl);
        `forget(folder)` drops a vanished folder's sessions."""
        self._watcher = watcher
        self._discovery = discovery
        self._scan = scan
        self._forget = forget
        self._roots: dict[str, Root] = {}
        self._lock = threading.Lock()
        self._unwatchable: set[str] = set()

    @property
    def registry(self) -> str | None:
        return self._discovery.registry

    # --- questions (any thread) -----------------------------------------------------------

    def watched(self) -> list[str]:
        """Every watched folder, the registry too: where `sync` plants its cookies."""
        with self._lock:
            folders = [r.path for r in self._roots.values() if r.watched]
        if self.registry and self._watcher.is_watching(self.registry):
            folders.append(self.registry)
        return folders

    def roots(self) -> list[Root]:
        with self._lock:
            return [Root(r.path, set(r.sources), r.watched) for r in self._roots.values()]

    def is_root(self, folder: str) -> bool:
        with self._lock:
            return folder in self._roots

    # --- changes (indexer thread) ---------------------------------------------------------

    def add(self, folder: str, source: Source) -> bool:
        """Serve `folder`; true when it is watched (and was scanned) now or already."""
        with self._lock:
            root = self._roots.get(folder)
            if root is None:
                root = self._roots[folder] = Root(folder)
            root.sources.add(source)
            if root.watched:
                return True
        if not os.path.isdir(folder):
            if source is Source.WORKSPACE and root.sources == {Source.WORKSPACE}:
                with self._lock:
                    del self._roots[folder]  # asked about, but there is nothing to serve
            return False
        try:
            self._watcher.watch(folder)
        except (FileNotFoundError, NotADirectoryError):
            return False  # gone again since it was seen: still pending, nothing to report
        except OSError as exc:
            if folder not in self._unwatchable:  # retried every few seconds: say it once
                self._unwatchable.add(folder)
                log_event("root_unwatchable", logging.ERROR, root=folder, error=str(exc))
            return False
        self._unwatchable.discard(folder)
        root.watched = True
        added = self._scan(folder)
        log_event("root_added", root=folder, source=str(source), sessions=added)
        return True

    def gone(self, folder: str) -> None:
        """`folder` was removed or moved away: unwatch it, forget its sessions, keep looking."""
        self._watcher.unwatch(folder)
        with self._lock:
            root = self._roots.get(folder)
            if root is not None:
                root.watched = False
        self._forget(folder)
        log_event("root_gone", root=folder)

    def verify(self, folder: str) -> bool:
        """True when `folder` is watched and its path still leads to the watched folder. One
        that moved away unseen (its parent renamed) is gone, whatever is at its path now."""
        if not self._watcher.is_watching(folder):
            return False
        if self._watcher.still_watching(folder):
            return True
        self.gone(folder)
        return False

    def check_pending(self) -> None:
        """Serve the folders that exist now, and watch the registry once it exists."""
        with self._lock:
            pending = [
                (r.path, next(iter(r.sources))) for r in self._roots.values() if not r.watched
            ]
        for folder, source in pending:
            if os.path.isdir(folder):
                self.add(folder, source)
        if self.registry:
            self.watch_registry(read=True)

    # --- the registry -----------------------------------------------------------------------

    def watch_registry(self, read: bool) -> None:
        registry = self.registry
        if not registry or self._watcher.is_watching(registry) or not os.path.isdir(registry):
            return
        self._watcher.watch(registry)
        if read:
            self.read_registry()

    def read_registry(self) -> None:
        if not self.registry:
            return
        # Many pointers name the same few folders: resolve each folder once.
        names = os.listdir(self.registry)
        targets = {t for name in names if (t := self._pointer_target(name))}
        for target in sorted(targets):
            self.add(root_key(target), Source.REGISTRY)

    def read_pointer(self, path: str) -> None:
        """A pointer file changed: serve the folder it names."""
        if os.path.dirname(path) != self.registry:
            return
        target = self._pointer_target(os.path.basename(path))
        if target:
            self.add(root_key(target), Source.REGISTRY)

    def _pointer_target(self, name: str) -> str | None:
        if not name.endswith(POINTER_SUFFIX) or self.registry is None:
            return None
        content = read_pointer(os.path.join(self.registry, name))
        return pointer_target_dir(content) if content is not None else None
