"""Small pieces of the indexer's work: a call to run on its thread, what a scan did, and how a
loaded file changes the index."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from sessiond.index.loader import Loaded, Outcome
from sessiond.index.records import SessionRecord
from sessiond.index.store import SessionIndex
from sessiond.logs import log_event


@dataclass
class Call:
    """`fn` to run on the indexer thread, after everything queued before it."""

    fn: Callable[[], Any]
    future: Future[Any]


@dataclass
class Counts:
    """What a scan or rescan did to the index."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    invalid: int = 0
    deferred: int = 0  # reads to retry: the daemon was out of descriptors or memory

    def as_dict(self) -> dict[str, int]:
        """The counts `rescan` answers (docs/protocol.md); deferred reads are logged instead."""
        return {k: v for k, v in self.__dict__.items() if k != "deferred"}


def apply_loaded(
    index: SessionIndex, path: str, loaded: Loaded, counts: Counts
) -> tuple[str, SessionRecord] | None:
    """Put what was loaded from `path` into the index and count it; return the change to
    announce ("saved" or "removed" and the record), if any."""
    if loaded.outcome in (Outcome.UNCHANGED, Outcome.STILL_INVALID):
        counts.unchanged += 1
        return None
    if loaded.outcome is Outcome.RETRY:
        # Out of descriptors or memory: the file is not gone, its record stays as it is and
        # the indexer reads it again later.
        counts.deferred += 1
        return None
    if loaded.record is not None:
        if index.upsert(loaded.record) is None:
            counts.added += 1
        else:
            counts.updated += 1
        return "saved", loaded.record
    if loaded.outcome is Outcome.INVALID:
        counts.invalid += 1
        log_event("session_invalid", logging.WARNING, path=path, error=loaded.error)
    elif loaded.outcome is Outcome.UNREADABLE:
        log_event("session_unreadable", logging.WARNING, path=path, error=loaded.error)
    old = index.remove(path)
    if old is None:
        return None
    counts.removed += 1
    return "removed", old
