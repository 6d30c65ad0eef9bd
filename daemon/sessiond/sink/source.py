"""Where the sink gets a session's history: the one seam between "session X" and its bytes.

`HistorySource` is all the sink asks of a session generation: a cheap identity of the current
version (compared with the ledger at start, so an unchanged session is not read again) and the
history object's bytes (history.py builds them for the agent's JSON files). Another generation
plugs in by giving the sink its own source.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from sessiond.index.records import FileVersion
from sessiond.logs import log_event
from sessiond.sink.history import History, read_history, stat_file


class SessionGone(Exception):
    """The session no longer exists: there is nothing to upload."""


class HistorySource(Protocol):
    def where(self, session_id: str) -> str | None:
        """A name for the session's storage, for messages; None when the session is unknown."""

    def version(self, session_id: str) -> FileVersion | None:
        """What identifies the session's current version without reading it; None: unknown."""

    def read(self, session_id: str) -> History:
        """The history object's bytes. Raises SessionGone, history.UnreadableSession (torn:
        wait for the next save) or OSError (cannot read now: retry)."""


class FileSource:
    """Sessions saved as the agent's JSON files, found through the index's `locate`."""

    def __init__(self, locate: Callable[[str], str | None]) -> None:
        self._locate = locate

    def where(self, session_id: str) -> str | None:
        try:
            return self._locate(session_id)
        except Exception as exc:  # the index's trouble must not stop the worker
            log_event("sink_error", logging.ERROR, where="locate", error=type(exc).__name__)
            return None

    def version(self, session_id: str) -> FileVersion | None:
        path = self.where(session_id)
        return None if path is None else stat_file(path)

    def read(self, session_id: str) -> History:
        path = self.where(session_id)
        if path is None:
            raise SessionGone(session_id)
        try:
            return read_history(path)
        except FileNotFoundError:
            raise SessionGone(session_id) from None  # deleted since locate; the index says so next
