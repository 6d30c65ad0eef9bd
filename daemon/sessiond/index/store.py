"""The in-memory index: session files by path, by id and by workspace.

It is fed records and removals and answers questions; it knows nothing of watchers, sockets or
S3. One thread writes (the indexer); readers on other threads take the same lock briefly.
Answers that would cost a scan are cached per key and dropped when that key changes.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable

from sessiond.index.records import FileVersion, SessionRecord

_ALL = "\x00all"  # the list cache's key for "every session"


class SessionIndex:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._by_path: dict[str, SessionRecord] = {}
        self._by_root: defaultdict[str, set[str]] = defaultdict(set)
        # id -> path, or a tuple of paths in the rare case of one id in several folders:
        # a set per session would cost more than the rest of its record.
        self._by_id: dict[str, str | tuple[str, ...]] = {}
        self._by_workspace: defaultdict[str, set[str]] = defaultdict(set)
        self._best: dict[str, SessionRecord | None] = {}
        self._sorted: dict[str, list[SessionRecord]] = {}
        self.seq = 0

    # --- feeding -----------------------------------------------------------------------

    def upsert(self, record: SessionRecord) -> SessionRecord | None:
        """Index `record`, replacing the one at its path; return the replaced one."""
        with self._lock:
            old = self._by_path.get(record.path)
            if old is not None:
                self._unlink(old)
            self._by_path[record.path] = record
            self._by_root[record.root].add(record.path)
            self._link_id(record.session_id, record.path)
            for key in record.workspaces:
                self._by_workspace[key].add(record.path)
                best = self._best.get(key)
                if best is not None and record.resume_key > best.resume_key:
                    self._best[key] = record
            self._sorted.clear()
            self.seq += 1
            return old

    def remove(self, path: str) -> SessionRecord | None:
        with self._lock:
            old = self._by_path.pop(path, None)
            if old is not None:
                self._unlink(old)
                self._sorted.clear()
                self.seq += 1
            return old

    def remove_root(self, root: str) -> list[SessionRecord]:
        with self._lock:
            return [r for p in list(self._by_root.get(root, ())) if (r := self.remove(p))]

    def _unlink(self, record: SessionRecord) -> None:
        _discard(self._by_root, record.root, record.path)
        self._unlink_id(record.session_id, record.path)
        for key in record.workspaces:
            _discard(self._by_workspace, key, record.path)
            if self._best.get(key) is record:
                del self._best[key]

    def _link_id(self, session_id: str, path: str) -> None:
        held = self._by_id.get(session_id)
        if held is None or held == path:
            self._by_id[session_id] = path
        else:
            paths = (held,) if isinstance(held, str) else held
            self._by_id[session_id] = (*paths, path) if path not in paths else paths

    def _unlink_id(self, session_id: str, path: str) -> None:
        held = self._by_id.get(session_id)
        if held == path:
            del self._by_id[session_id]
        elif isinstance(held, tuple):
            rest = tuple(p for p in held if p != path)
            self._by_id[session_id] = rest[0] if len(rest) == 1 else rest

    def _paths_of_id(self, session_id: str) -> tuple[str, ...]:
        held = self._by_id.get(session_id, ())
        return (held,) if isinstance(held, str) else held

    # --- questions -----------------------------------------------------------------------

    def versions_under(self, root: str) -> dict[str, FileVersion]:
        with self._lock:
            return {p: self._by_path[p].version for p in self._by_root.get(root, ())}

    def by_path(self, path: str) -> SessionRecord | None:
        with self._lock:
            return self._by_path.get(path)

    def resume(self, workspace: str) -> SessionRecord | None:
        """The session the agent's scan puts first for a canonical workspace."""
        with self._lock:
            if key_missing := workspace not in self._best:
                paths = self._by_workspace.get(workspace)
                best = None
                if paths:
                    best = max((self._by_path[p] for p in paths), key=lambda r: r.resume_key)
                self._best[workspace] = best
            best = self._best[workspace]
            if key_missing and best is None:
                del self._best[workspace]  # don't let misses for unknown folders pile up
            return best

    def get(self, session_id: str) -> SessionRecord | None:
        """The newest file named `<id>.json` whose content has that id (`Session::load`)."""
        with self._lock:
            matches = [
                r
                for p in self._paths_of_id(session_id)
                if (r := self._by_path[p]).file_name == f"{session_id}.json"
            ]
            return max(matches, key=lambda r: r.resume_key, default=None)

    def list(
        self, workspace: str | None, limit: int, offset: int
    ) -> tuple[list[SessionRecord], int]:
        """Sessions newest `updated_at` first, for one workspace or all; and their total."""
        key = _ALL if workspace is None else workspace
        with self._lock:
            ordered = self._sorted.get(key)
            if ordered is None:
                pool: Iterable[SessionRecord]
                if workspace is None:
                    pool = self._by_path.values()
                else:
                    pool = (self._by_path[p] for p in self._by_workspace.get(workspace, ()))
                ordered = sorted(pool, key=lambda r: r.list_key, reverse=True)
                self._sorted[key] = ordered
            return ordered[offset : offset + limit], len(ordered)

    def records(self) -> list[SessionRecord]:
        with self._lock:
            return list(self._by_path.values())

    def all_ids(self) -> set[str]:
        with self._lock:
            return set(self._by_id)

    def counts(self) -> dict[str, object]:
        with self._lock:
            return {
                "sessions": len(self._by_path),
                "workspaces": len(
                    {r.workspaces[-1] for r in self._by_path.values() if r.workspaces}
                ),
                "roots": {root: len(paths) for root, paths in self._by_root.items()},
            }


def _discard(table: defaultdict[str, set[str]], key: str, path: str) -> None:
    paths = table.get(key)
    if paths is not None:
        paths.discard(path)
        if not paths:
            del table[key]
