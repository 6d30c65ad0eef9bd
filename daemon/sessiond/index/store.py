"""The in-memory index: session files by folder and file stem, by id and by workspace.

It is fed records and removals and answers questions; it knows nothing of watchers, sockets or
S3. One thread writes (the indexer); readers on other threads take the same lock briefly.
Answers that would cost a scan are cached per key and dropped when that key changes.

Tables hold the records themselves (hashed by identity), never path strings: a path is as big
as the rest of a record, and each table would need its own.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Iterable
from typing import NamedTuple

from sessiond.index.database_records import answer_order
from sessiond.index.records import SessionRecord, split_session_path

_ALL = "\x00all"  # the list cache's key for "every session"


class IndexCounts(NamedTuple):
    """What the index holds: sessions, the workspaces they answer, and sessions per folder."""

    sessions: int
    workspaces: int
    per_folder: dict[str, int]


class SessionIndex:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._folders: dict[str, dict[str, SessionRecord]] = {}  # folder -> file stem -> record
        # id -> record, or a tuple of records in the rare case of one id in several files:
        # a set per session would cost more than the rest of its record.
        self._by_id: dict[str, SessionRecord | tuple[SessionRecord, ...]] = {}
        # A list per workspace, not a set: a set costs ~40 bytes per member, a list 8, and
        # removing a record scans only its workspace's list.
        self._by_workspace: dict[str, list[SessionRecord]] = {}
        self._best: dict[str, SessionRecord | None] = {}
        self._sorted: dict[str, list[SessionRecord]] = {}
        # folder -> which workspaces its sessions may answer (the others never see them)
        self._confined: dict[str, Callable[[str], bool]] = {}
        self._count = 0
        self.seq = 0
        # Folders holding an agent database: their workspaces are answered by `updated_at`.
        self._db_folders: set[str] = set()

    # --- feeding -----------------------------------------------------------------------

    def upsert(self, record: SessionRecord) -> SessionRecord | None:
        """Index `record`, replacing the one at its path; return the replaced one."""
        with self._lock:
            folder = self._folders.get(record.folder)
            if folder is None:
                folder = self._folders[record.folder] = {}
            stem = record.file_stem
            old = folder.get(stem)
            if old is not None:
                self._unlink(old)
            else:
                self._count += 1
            folder[stem] = record
            self._link_id(record)
            self._link_workspaces(record)
            self._sorted.clear()
            self.seq += 1
            return old

    def _answers(self, record: SessionRecord) -> Iterable[str]:
        allows = self._confined.get(record.folder) if self._confined else None
        if allows is None:
            return record.workspaces
        return [k for k in record.workspaces if allows(k)]

    def _link_workspaces(self, record: SessionRecord) -> None:
        for key in self._answers(record):
            members = self._by_workspace.get(key)
            if members is None:
                self._by_workspace[key] = [record]
            else:
                members.append(record)
            best = self._best.get(key)
            if self._db_folders:
                self._best.pop(key, None)  # the order may be another: find it again
            elif best is not None and record.resume_key > best.resume_key:
                self._best[key] = record

    def confine(self, root: str, allows: Callable[[str], bool] | None) -> None:
        """Let the sessions of `root` answer only the workspaces `allows` accepts (None: all
        their workspaces). Judged again for every session of `root` now, and for each one
        indexed later."""
        with self._lock:
            if allows is None and root not in self._confined:
                return
            records = list(self._folders.get(root, {}).values())
            for record in records:
                self._unlink_workspaces(record)
            if allows is None:
                del self._confined[root]
            else:
                self._confined[root] = allows
            for record in records:
                self._link_workspaces(record)
            self._sorted.clear()
            self.seq += 1

    def remove(self, path: str) -> SessionRecord | None:
        root, stem = split_session_path(path)
        with self._lock:
            folder = self._folders.get(root)
            old = folder.pop(stem, None) if folder is not None else None
            if old is not None:
                if not folder:
                    del self._folders[root]
                self._count -= 1
                self._unlink(old)
                self._sorted.clear()
                self.seq += 1
            return old

    def set_database_folder(self, folder: str, present: bool) -> None:
        """Whether `folder` holds the agent's database (docs/storage.md: answer order)."""
        with self._lock:
            if present == (folder in self._db_folders):
                return
            if present:
                self._db_folders.add(folder)
            else:
                self._db_folders.discard(folder)
            self._best.clear()
            self.seq += 1

    def remove_folder(self, folder: str) -> list[SessionRecord]:
        with self._lock:
            return [r for r in self.records_under(folder) if self.remove(r.path)]

    def _unlink(self, record: SessionRecord) -> None:
        self._unlink_id(record)
        self._unlink_workspaces(record)

    def _unlink_workspaces(self, record: SessionRecord) -> None:
        # Every key, not only those it answers now: a confined folder's rule may have changed
        # since the record was linked.
        for key in record.workspaces:
            members = self._by_workspace.get(key)
            if members is not None:
                try:
                    members.remove(record)  # records compare by identity
                except ValueError:
                    continue  # not linked there: its folder's rule kept it out
                if not members:
                    del self._by_workspace[key]
            if self._best.get(key) is record:
                del self._best[key]

    def _link_id(self, record: SessionRecord) -> None:
        held = self._by_id.get(record.session_id)
        if held is None:
            self._by_id[record.session_id] = record
        else:
            records = held if isinstance(held, tuple) else (held,)
            self._by_id[record.session_id] = (*records, record)

    def _unlink_id(self, record: SessionRecord) -> None:
        held = self._by_id.get(record.session_id)
        if held is record:
            del self._by_id[record.session_id]
        elif isinstance(held, tuple):
            rest = tuple(r for r in held if r is not record)
            self._by_id[record.session_id] = rest[0] if len(rest) == 1 else rest

    def _records_of_id(self, session_id: str) -> tuple[SessionRecord, ...]:
        held = self._by_id.get(session_id, ())
        return held if isinstance(held, tuple) else (held,)

    # --- questions -----------------------------------------------------------------------

    def records_under(self, root: str) -> list[SessionRecord]:
        with self._lock:
            return list(self._folders.get(root, {}).values())

    def by_path(self, path: str) -> SessionRecord | None:
        root, stem = split_session_path(path)
        with self._lock:
            folder = self._folders.get(root)
            return None if folder is None else folder.get(stem)

    def resume(self, workspace: str) -> SessionRecord | None:
        """The session the agent's scan puts first for a canonical workspace."""
        with self._lock:
            if key_missing := workspace not in self._best:
                members = self._by_workspace.get(workspace)
                best = self._first(members) if members else None
                self._best[workspace] = best
            best = self._best[workspace]
            if key_missing and best is None:
                del self._best[workspace]  # don't let misses for unknown folders pile up
            return best

    def _first(self, members: list[SessionRecord]) -> SessionRecord:
        """The agent's first: by file time, or by `updated_at` once a database is involved."""
        if self._db_folders and any(r.folder in self._db_folders for r in members):
            return max(members, key=answer_order)
        return max(members, key=lambda r: r.resume_key)

    def get(self, session_id: str) -> SessionRecord | None:
        """The newest file named `<id>.json` whose content has that id (`Session::load`)."""
        with self._lock:
            matches = [r for r in self._records_of_id(session_id) if r.stem is None]
            return max(matches, key=lambda r: r.resume_key, default=None)

    def list(
        self, workspace: str | None, limit: int, offset: int
    ) -> tuple[builtins.list[SessionRecord], int]:
        """Sessions newest `updated_at` first, for one workspace or all; and their total."""
        key = _ALL if workspace is None else workspace
        with self._lock:
            ordered = self._sorted.get(key)
            if ordered is None:
                pool = self._all() if workspace is None else self._by_workspace.get(workspace, ())
                ordered = sorted(pool, key=lambda r: r.list_key, reverse=True)
                self._sorted[key] = ordered
            return ordered[offset : offset + limit], len(ordered)

    def _all(self) -> Iterable[SessionRecord]:
        return (r for folder in self._folders.values() for r in folder.values())

    def records(self) -> builtins.list[SessionRecord]:
        with self._lock:
            return list(self._all())

    def all_ids(self) -> set[str]:
        with self._lock:
            return set(self._by_id)

    def __len__(self) -> int:
        return self._count

    def counts(self) -> IndexCounts:
        with self._lock:
            return IndexCounts(
                sessions=self._count,
                workspaces=len({r.workspaces[-1] for r in self._all() if r.workspaces}),
                per_folder={folder: len(records) for folder, records in self._folders.items()},
            )
