"""The writer thread: keeps each served folder's `.workspace_index.json` and
`.listing_cache.json` true, coalescing bursts of changes.

Fed by two calls, both cheap and safe from any thread:
- `notify(folder)`: a session in `folder` was saved or removed, or the folder was (re)scanned;
- `agent_file_changed(path)`: one of the two files was written or removed by someone. Events
  of sessiond's own writes are recognised by the file's version and ignored, so they cost a
  `stat`; whatever else wrote the file, the folder is recomputed and fixed if need be.
A folder is recomputed `debounce_s` after its last change, and never later than `max_delay_s`
after its first, so a burst of saves costs a few writes and a steady stream one per
`max_delay_s`. A file is rewritten only when what the agent would read from it differs from
the truth, so a recomputation after our own write, or after the agent wrote the truth, writes
nothing: no loops.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sessionctl.agent import LISTING_CACHE_NAME, WORKSPACE_INDEX_NAME
from sessionctl.regular import is_transient

from sessiond import trim_memory
from sessiond.agentfiles import files, formats
from sessiond.agentfiles import listing_cache as cache_rules
from sessiond.agentfiles import workspace_index as index_rules
from sessiond.agentfiles.workspace_index import Changes
from sessiond.index.change import Change
from sessiond.index.database_records import is_stored
from sessiond.index.records import FileVersion, SessionRecord
from sessiond.index.store import SessionIndex
from sessiond.logs import log_event

DEBOUNCE_S = 0.2
MAX_DELAY_S = 1.0
REMOVAL_QUIET_S = 2.0
"""A folder whose sessions are disappearing is written only once none has gone for this long:
it may be being deleted (`rm -rf`), and a file written into it meanwhile would make the
deletion fail ("Directory not empty")."""


@dataclass
class _Kind:
    """One of the two files: how it is planned and parsed, and its counters."""

    name: str  # the file's name; its status key is the name without dots and `.json`
    parse: Callable[[bytes], Mapping[str, Any] | None]
    plan: Callable[[str, list[SessionRecord], Mapping[str, Any]], dict[str, Any]]
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("writes", "checks", "added", "repaired", "dropped", "corrupt", "failures"), 0
        )
    )


@dataclass
class _Due:
    first: float
    last: float


class AgentFiles:
    def __init__(
        self,
        index: SessionIndex,
        *,
        workspace_index: bool = True,
        listing_cache: bool = True,
        serves: Callable[[str], bool] | None = None,
        debounce_s: float = DEBOUNCE_S,
        max_delay_s: float = MAX_DELAY_S,
    ) -> None:
        """`serves(folder)` says whether a folder is still served (indexer.is_served); sessiond
        writes in no other folder."""
        self._index = index
        self._serves = serves or (lambda _folder: True)
        self._debounce_s = debounce_s
        self._max_delay_s = max_delay_s
        # A file whose setting is off has no kind: it is never read, written or counted.
        self._kinds: list[_Kind] = []
        if workspace_index:
            self._kinds.append(_Kind(WORKSPACE_INDEX_NAME, formats.parse_index, index_rules.plan))
        if listing_cache:
            planner = cache_rules.Planner()
            self._kinds.append(_Kind(LISTING_CACHE_NAME, formats.parse_cache, planner))
        self._names = {k.name for k in self._kinds}
        self._cond = threading.Condition()
        self._due: dict[str, _Due] = {}
        self._removed_at: dict[str, float] = {}  # folder -> when a session of it last went
        self._busy = False
        self._stopping = False
        self._own: dict[str, tuple[FileVersion, bytes]] = {}  # path -> our last write there
        self._failed: dict[str, str] = {}  # path -> why it could not be written
        self._thread = threading.Thread(target=self._run, name="sessiond-agentfiles", daemon=True)

    # --- any thread ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._kinds:
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after bringing every folder with pending changes up to date."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def notify(self, folder: str) -> None:
        if not self._kinds:
            return
        now = time.monotonic()
        with self._cond:
            if self._stopping:
                return
            due = self._due.get(folder)
            if due is None:
                self._due[folder] = _Due(now, now)
            else:
                due.last = now
            self._cond.notify_all()

    def on_index_change(self, change: Change, record: SessionRecord) -> None:
        """An `Indexer.add_listener` listener."""
        if change is Change.REMOVED and self._kinds:
            with self._cond:
                self._removed_at[record.folder] = time.monotonic()
        self.notify(record.folder)

    def agent_file_changed(self, path: str) -> None:
        folder, name = os.path.split(path)
        if name not in self._names:
            return
        with self._cond:
            own = self._own.get(path)
        if own is not None and files.is_unchanged(path, *own):
            return  # the event of our own write
        self.notify(folder)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no folder is pending or being written; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._due or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def status(self) -> dict[str, Any]:
        with self._cond:
            on = {k.name: k for k in self._kinds}
            report: dict[str, Any] = {
                _status_key(name): {"enabled": True, **on[name].counts}
                if name in on
                else {"enabled": False}
                for name in (WORKSPACE_INDEX_NAME, LISTING_CACHE_NAME)
            }
            report["pending_folders"] = len(self._due)
        report["problems"] = self.check()
        return report

    def check(self) -> list[str]:
        """Problems for `doctor`: files that could not be written at the last attempt."""
        with self._cond:
            failed = sorted(self._failed.items())
        return [f"cannot write {path}: {why}" for path, why in failed]

    # --- the thread -----------------------------------------------------------------------

    def _next(self) -> str | None:
        """The next folder whose time has come; None once stopping and nothing is left."""
        with self._cond:
            while True:
                now = time.monotonic()
                ready_at = {
                    f: max(
                        min(d.last + self._debounce_s, d.first + self._max_delay_s),
                        self._removed_at.get(f, 0.0) + REMOVAL_QUIET_S,
                    )
                    for f, d in self._due.items()
                }
                if ready_at:
                    folder = min(ready_at, key=ready_at.__getitem__)
                    if self._stopping or ready_at[folder] <= now:
                        del self._due[folder]
                        self._removed_at.pop(folder, None)
                        self._busy = True
                        return folder
                elif self._stopping:
                    return None
                self._cond.wait(min(ready_at.values()) - now if ready_at else None)

    def _run(self) -> None:
        while (folder := self._next()) is not None:
            try:
                self._sync_folder(folder)
            except Exception:  # a bug with one folder must not stop the others
                log_event("agentfiles_error", logging.ERROR, folder=folder, exc_info=True)
            finally:
                with self._cond:
                    self._busy = False
                    idle = not self._due
                    self._cond.notify_all()
            if idle:
                trim_memory.trim()  # a pass over many folders leaves its garbage freed

    def _sync_folder(self, folder: str) -> None:
        if not self._serves(folder) or not os.path.isdir(folder):
            return  # gone or no longer served: nothing of ours to keep there
        # Database sessions never enter the agent's files (docs/storage.md).
        records = [r for r in self._index.records_under(folder) if not is_stored(r)]
        for kind in self._kinds:
            self._sync_file(folder, kind, records)

    def _sync_file(self, folder: str, kind: _Kind, records: list[SessionRecord]) -> None:
        path = os.path.join(folder, kind.name)
        try:
            data = files.read(path)
        except OSError as exc:
            if is_transient(exc):  # out of descriptors or memory: what it holds is unknown
                log_event("agentfile_unreadable", logging.WARNING, path=path, error=str(exc))
                return
            data = b""  # unreadable: what the agent gets is an empty file; try to replace it
            log_event("agentfile_unreadable", logging.WARNING, path=path, error=str(exc))
        parsed = {} if data is None else kind.parse(data)
        current = parsed or {}
        wanted = kind.plan(folder, records, current)
        with self._cond:
            kind.counts["checks"] += 1
        if parsed == wanted or (data is None and not wanted):
            return  # true already (a missing file reads as empty to the agent)
        payload = formats.encode(wanted)
        try:
            written = files.replace(folder, kind.name, payload)
        except OSError as exc:
            self._failure(kind, path, exc)
            return
        changes = Changes.between(current, wanted)
        with self._cond:
            self._own[path] = (written, files.digest(payload))
            if self._failed.pop(path, None) is not None:
                log_event("agentfile_writable", path=path)
            counts = kind.counts
            counts["writes"] += 1
            counts["added"] += changes.added
            counts["repaired"] += changes.repaired
            counts["dropped"] += changes.dropped
            counts["corrupt"] += int(parsed is None and data is not None)

    def _failure(self, kind: _Kind, path: str, exc: OSError) -> None:
        why = exc.strerror or str(exc)
        with self._cond:
            kind.counts["failures"] += 1
            first = path not in self._failed
            self._failed[path] = why
        if first:  # once per file until it works again, not once per attempt
            log_event("agentfile_write_failed", logging.WARNING, path=path, error=why)


def _status_key(name: str) -> str:
    return name.strip(".").removesuffix(".json")  # ".workspace_index.json" -> "workspace_index"
