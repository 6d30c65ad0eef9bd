"""watchdog glue: one non-recursive inotify watch per folder, events handed on as plain tuples.

The handler runs on watchdog's dispatch thread. It only filters and enqueues, and it never
raises: an exception there would kill that thread and silently stop all watching.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from watchdog.events import (
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import ObservedWatch
from watchdog.observers.inotify import InotifyEmitter, InotifyObserver
from watchdog.observers.inotify_c import InotifyConstants, Mask
from watchdog.observers.inotify_move_event_grouper import (
    GroupedInotifyEvent,
    InotifyMoveEventGrouper,
    PathedInotifyEvent,
)

from sessiond.logs import log_event

# Reads (opened / closed-without-write) and in-progress writes (modified) are left out, so
# reading a file, ours or anyone's, never floods the queue. A save arrives as a move, an
# in-place write as created + closed, an mtime set by hand (touch) as an attribute change.
EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileAttribEvent,
    FileCreatedEvent,
    FileClosedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]


class FsEvent(NamedTuple):
    # "changed" (created/closed/moved-to), "attrib" (mode, owner or times set: the content may
    # be the same, its readability not), "gone" (deleted/moved-from), "folder_gone" (the
    # watched folder itself), "overflow" (the kernel dropped events; the folder needs a rescan)
    kind: str
    path: str


# watchdog holds an IN_MOVED_FROM for up to `delay` seconds to pair it with its IN_MOVED_TO,
# and every later event of the folder waits behind it: with the default 0.5 s a save was now
# and then visible only half a second late. The two halves of a rename are queued together by
# the kernel, so a short wait pairs them; an unpaired half is a delete plus a create, which the
# indexer treats the same as a move anyway.
InotifyMoveEventGrouper.delay = 0.01


class _OverflowReportingEmitter(InotifyEmitter):
    """watchdog 7.1 only logs an inotify queue overflow and gives handlers no event; without
    one the index would silently miss changes. This emitter reports it for its folder."""

    def __init__(self, *args: Any, report_overflow: Callable[[str], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._report_overflow = report_overflow

    def get_event_mask_from_filter(self) -> Mask:
        # watchdog 7.1 subscribes IN_ATTRIB only for FileModifiedEvent, never for
        # FileAttribEvent: ask for it here, without taking every in-progress write too.
        mask = super().get_event_mask_from_filter()
        if self._event_filter is not None and FileAttribEvent in self._event_filter:
            mask = Mask(mask | InotifyConstants.IN_ATTRIB)
        # The watched folder itself moved away (watchdog 7.1 never asks for IN_MOVE_SELF): the
        # watch would follow it to its new place and miss a folder made at the old path.
        return Mask(mask | InotifyConstants.IN_MOVE_SELF)

    def build_and_queue_event(
        self, event: GroupedInotifyEvent, *, full_events: bool = False
    ) -> None:
        if isinstance(event, PathedInotifyEvent) and event.ev.is_move_self:
            if self._decode_path(event.path) == self.watch.path:
                self.queue_event(DirMovedEvent(self.watch.path, ""))
            return
        super().build_and_queue_event(event, full_events=full_events)

    def queue_events(self, timeout: float, *, full_events: bool = False) -> None:
        # watchdog 7.1's own logs an error when it finds itself stopped mid-read, which is
        # what unwatching a folder whose emitter is still running (it moved away, rather
        # than being deleted) always risks: the same steps, without the false alarm.
        with self._lock:
            inotify = self._inotify
        event = inotify.read_event() if inotify is not None else None
        if event is None:
            return
        with self._lock:
            if self._inotify is not None:
                self.build_and_queue_event(event, full_events=full_events)

    def on_thread_start(self) -> None:
        super().on_thread_start()
        group = self._inotify
        if group is None:
            return
        discard_pending = group.on_queue_overflow
        folder = _text(self.watch.path)

        def on_queue_overflow() -> None:
            discard_pending()
            self._report_overflow(folder)

        group.on_queue_overflow = on_queue_overflow  # type: ignore[method-assign]


class _Observer(InotifyObserver):
    def __init__(self, report_overflow: Callable[[str], None]) -> None:
        super().__init__()
        # BaseObserver builds one emitter per watch from these (watchdog 7.1).
        self._emitter_class = _OverflowReportingEmitter
        self._emitter_kwargs["report_overflow"] = report_overflow


class _Handler(FileSystemEventHandler):
    def __init__(self, folder: str, deliver: Callable[[FsEvent], None]) -> None:
        self._folder = folder
        self._deliver = deliver

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._translate(event)
        except Exception:  # never let the dispatch thread die
            log_event("watch_handler_error", logging.ERROR, folder=self._folder, exc_info=True)

    def _translate(self, event: FileSystemEvent) -> None:
        src = _text(event.src_path)
        if event.is_directory:
            if src == self._folder and event.event_type in ("deleted", "moved"):
                self._deliver(FsEvent("folder_gone", src))
            return
        if event.event_type == "moved":
            self._deliver(FsEvent("gone", src))
            self._deliver(FsEvent("changed", _text(event.dest_path)))
        elif event.event_type == "deleted":
            self._deliver(FsEvent("gone", src))
        else:
            self._deliver(FsEvent("attrib" if event.event_type == "attrib" else "changed", src))


def _identity(folder: str) -> tuple[int, int]:
    st = os.stat(folder)
    return st.st_dev, st.st_ino


def _text(path: str | bytes) -> str:
    return path.decode("utf-8", "surrogateescape") if isinstance(path, bytes) else path


class FolderWatcher:
    """Watches folders (not recursively) and delivers their events to one callback."""

    def __init__(self, deliver: Callable[[FsEvent], None]) -> None:
        self._deliver = deliver
        self._observer = _Observer(lambda folder: deliver(FsEvent("overflow", folder)))
        self._watches: dict[str, ObservedWatch] = {}
        self._identities: dict[str, tuple[int, int]] = {}  # folder -> (st_dev, st_ino) watched
        self._lock = threading.Lock()

    def start(self) -> None:
        self._observer.daemon = True
        self._observer.start()

    def watch(self, folder: str) -> None:
        """Start watching `folder`; raises OSError when it cannot be watched."""
        with self._lock:
            if folder in self._watches:
                return
            identity = _identity(folder)
            self._watches[folder] = self._observer.schedule(
                _Handler(folder, self._deliver), folder, recursive=False, event_filter=EVENT_FILTER
            )
            self._identities[folder] = identity

    def still_watching(self, folder: str) -> bool:
        """True when `folder`'s path still leads to the folder its watch is on. A watch follows
        its folder when it moves; if a parent was renamed, no event says so."""
        with self._lock:
            identity = self._identities.get(folder)
        try:
            return identity is not None and _identity(folder) == identity
        except OSError:
            return False

    def unwatch(self, folder: str) -> None:
        with self._lock:
            watch = self._watches.pop(folder, None)
            self._identities.pop(folder, None)
        if watch is not None:
            try:
                self._observer.unschedule(watch)
            except (KeyError, OSError):
                pass  # the kernel already dropped the watch with its folder

    def is_watching(self, folder: str) -> bool:
        with self._lock:
            return folder in self._watches

    def healthy(self) -> bool:
        return self._observer.is_alive()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)
