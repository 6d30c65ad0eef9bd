"""watchdog glue: one non-recursive inotify watch per folder, events handed on as `FsEvent`s.

All folders share one inotify instance and one reading thread: watchdog's `InotifyFD`, with a
callback per folder. (watchdog's observer would start a thread per watched folder: ~20 KiB of
memory each and a thread start per folder, and the agent's registry can name thousands.)

The callbacks run on that thread. They only translate and enqueue, and they never raise: an
exception there would kill the thread and silently stop all watching.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import cast

from watchdog.observers.inotify_c import (
    CallbackId,
    InotifyEvent,
    InotifyFD,
    Mask,
    WatchDescriptor,
)
from watchdog.observers.inotify_c import (
    InotifyConstants as In,
)

from sessiond.logs import log_event
from sessiond.watch.fs_event import FsEvent, FsKind

# Reads (open, access, close-without-write) and in-progress writes (modify, except to the
# agent's database) are left out, so reading a file, ours or anyone's, never floods the queue.
# A save arrives as a move, an in-place write as create + close-write, an mtime set by hand
# (touch) as an attribute change.
# The folder itself deleted or moved away ends its watch.
WATCH_MASK = Mask(
    In.IN_CREATE
    | In.IN_CLOSE_WRITE
    | In.IN_MOVED_FROM
    | In.IN_MOVED_TO
    | In.IN_DELETE
    | In.IN_ATTRIB
    | In.IN_MODIFY
    | In.IN_DELETE_SELF
    | In.IN_MOVE_SELF
    | In.IN_ONLYDIR
    | In.IN_DONT_FOLLOW
    | In.IN_EXCL_UNLINK
)
_GONE = In.IN_MOVED_FROM | In.IN_DELETE
# In-progress writes count only for the agent's database and its WAL, where a commit by a
# connection that stays open shows no other event (docs/storage.md).
_MODIFY_NAMES = (b"sessions.sqlite3", b"sessions.sqlite3-wal")
_SELF = In.IN_DELETE_SELF | In.IN_MOVE_SELF


class _FolderCallback:
    """watchdog's `WatchCallback` for one folder. A rename arrives as its two halves, gone
    then changed; the indexer needs no pairing."""

    def __init__(self, folder: str, deliver: Callable[[FsEvent], None]) -> None:
        self.folder = folder
        self._deliver = deliver
        self._gone = False

    def on_event(self, event: InotifyEvent) -> None:
        try:
            self._translate(event)
        except Exception:  # never let the reading thread die
            log_event("watch_handler_error", logging.ERROR, folder=self.folder, exc_info=True)

    def _translate(self, event: InotifyEvent) -> None:
        mask = event.mask
        if mask & In.IN_DELETE_SELF:
            self._folder_gone(FsKind.FOLDER_DELETED)
        elif mask & In.IN_MOVE_SELF:
            self._folder_gone(FsKind.FOLDER_GONE)
        elif not event.name and mask & In.IN_ATTRIB:
            self._deliver(FsEvent(FsKind.FOLDER_ATTRIB, self.folder))  # its mode may have changed
        elif event.name and not mask & In.IN_ISDIR:
            if mask & In.IN_MODIFY and event.name not in _MODIFY_NAMES:
                return
            path = os.path.join(self.folder, os.fsdecode(event.name))
            if mask & _GONE:
                self._deliver(FsEvent(FsKind.GONE, path))
            elif mask & In.IN_ATTRIB:
                self._deliver(FsEvent(FsKind.ATTRIB, path))
            else:
                self._deliver(FsEvent(FsKind.CHANGED, path))

    def on_watch_deleted(self, wd: WatchDescriptor) -> None:
        self._folder_gone(FsKind.FOLDER_GONE)

    def _folder_gone(self, kind: FsKind) -> None:
        if not self._gone:  # the folder's deletion and then its watch's end: say it once
            self._gone = True
            self._deliver(FsEvent(kind, self.folder))

    def on_queue_overflow(self) -> None:
        self._deliver(FsEvent(FsKind.OVERFLOW, self.folder))


def _identity(folder: str) -> tuple[int, int]:
    st = os.stat(folder)
    return st.st_dev, st.st_ino


class FolderWatcher:
    """Watches folders (not recursively) and delivers their events to one callback."""

    def __init__(self, deliver: Callable[[FsEvent], None]) -> None:
        self._deliver = deliver
        self._inotify: InotifyFD | None = None
        self._watches: dict[str, WatchDescriptor] = {}
        self._identities: dict[str, tuple[int, int]] = {}  # folder -> (st_dev, st_ino) watched
        self._parents: dict[str, tuple[int, int] | None] = {}  # folder -> its parent's, watched
        self._lock = threading.Lock()

    def start(self) -> None:
        """Raises OSError when inotify is not available (no instance left for this user)."""
        inotify = InotifyFD()
        inotify.daemon = True
        inotify.start()
        self._inotify = inotify

    def watch(self, folder: str) -> None:
        """Start watching `folder`; raises OSError when it cannot be watched."""
        with self._lock:
            if folder in self._watches:
                return
            if self._inotify is None:
                raise OSError("the watcher is not running")
            identity = _identity(folder)
            try:
                parent: tuple[int, int] | None = _identity(os.path.dirname(folder))
            except OSError:
                parent = None
            callback = _FolderCallback(folder, self._deliver)
            wd = self._inotify.add_callback(
                os.fsencode(folder), WATCH_MASK, callback, _callback_id(folder)
            )
            if wd < 0:  # watchdog 7.1 returns -1 instead of raising for EACCES
                self._inotify.remove_callbacks([(wd, _callback_id(folder))])
                raise PermissionError(f"cannot watch {folder}: permission denied")
            self._watches[folder] = wd
            self._identities[folder] = identity
            self._parents[folder] = parent

    def still_watching(self, folder: str) -> bool:
        """True when `folder`'s path still leads to the folder its watch is on. A watch follows
        its folder when it moves; if a parent was renamed, no event says so."""
        with self._lock:
            identity = self._identities.get(folder)
        try:
            return identity is not None and _identity(folder) == identity
        except OSError:
            return False

    def left_its_parent(self, folder: str) -> bool:
        """True when `folder`'s parent is still the folder it was watched in: if `folder` is
        no longer at its path, it was deleted or renamed itself, and its own watch reports
        that (deleted or moved away). False when an ancestor moved: no event says so."""
        with self._lock:
            parent = self._parents.get(folder)
        try:
            return parent is not None and _identity(os.path.dirname(folder)) == parent
        except OSError:
            return False

    def unwatch(self, folder: str) -> None:
        with self._lock:
            wd = self._watches.pop(folder, None)
            self._identities.pop(folder, None)
            self._parents.pop(folder, None)
            if wd is not None and self._inotify is not None:
                try:
                    self._inotify.remove_callbacks([(wd, _callback_id(folder))])
                except OSError:
                    pass  # the kernel already dropped the watch with its folder

    def is_watching(self, folder: str) -> bool:
        with self._lock:
            return folder in self._watches

    def healthy(self) -> bool:
        return self._inotify is not None and self._inotify.is_alive()

    def stop(self) -> None:
        if self._inotify is not None:
            self._inotify.stop()
            self._inotify.join(timeout=5)


def _callback_id(folder: str) -> CallbackId:
    """watchdog only uses a callback's id as a key, so the folder (unique here) serves as one;
    its type says int."""
    return cast("CallbackId", folder)
