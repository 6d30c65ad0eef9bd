"""Who the indexer tells about what it did. Every callback runs on the indexer thread and is
guarded: a listener that raises is logged and the others still run."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sessiond.index.change import Change
from sessiond.index.records import SessionRecord
from sessiond.logs import log_event
from sessiond.watch.scan_report import RescanSummary

ChangeListener = Callable[[Change, SessionRecord], None]
RescanListener = Callable[[RescanSummary], None]


class Listeners:
    def __init__(self) -> None:
        self.changes: list[ChangeListener] = []
        self.rescans: list[RescanListener] = []
        self.agent_files: list[Callable[[str], None]] = []  # (path of an agent sidecar event)
        self.folders: list[Callable[[str], None]] = []  # (folder just (re)scanned)

    def changed(self, change: Change, record: SessionRecord) -> None:
        _call_all(self.changes, change, record)

    def rescanned(self, summary: RescanSummary) -> None:
        log_event("rescan", **summary.fields())
        _call_all(self.rescans, summary)

    def agent_file(self, path: str) -> None:
        _call_all(self.agent_files, path)

    def folder_scanned(self, folder: str) -> None:
        _call_all(self.folders, folder)


def _call_all(callbacks: list[Callable[..., None]], *args: Any) -> None:
    for callback in callbacks:
        try:
            callback(*args)
        except Exception:
            log_event("listener_error", logging.ERROR, exc_info=True)
