"""The reference answers for folders of both storage generations (docs/storage.md).

Database rows are rebuilt by tests.support.agent_store.rows_as_sessions (plain SQL of its own) and
take the slot of their locator `<folder>/<id>.json`; a legacy file whose id has a row in the
same folder does not count; a locator is no session. Where a folder with a database is
involved, `resume` picks the newest `updated_at` (ties: the row, then the greater id); else
the file rule of tests.support.reference.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from tests.support import reference
from tests.support.agent_store import locator, rows_as_sessions
from tests.support.reference import Ambiguous, SessionFile, answer, belongs_to, instant_ns

LOCATOR_HEAD = b'{"codetether_store":1,'


def _is_locator(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(22) == LOCATOR_HEAD
    except OSError:
        return False


class StoreSnapshot:
    def __init__(self, folders: Iterable[str]) -> None:
        self.sessions: list[SessionFile] = []
        self.rows: set[str] = set()  # paths of database sessions
        self.db_folders: set[str] = set()
        for folder in folders:
            folder = os.path.realpath(folder)
            rows = rows_as_sessions(folder)
            if os.path.exists(os.path.join(folder, "sessions.sqlite3")):
                self.db_folders.add(folder)
            for name in sorted(os.listdir(folder)):
                if not reference.is_session_name(name) or name.endswith(".legacy.json"):
                    continue
                if name.startswith((".tmp", ".session-")):
                    continue
                path = os.path.join(folder, name)
                if _is_locator(path):
                    continue
                loaded = reference.load(path)
                if loaded is None or (
                    name == loaded.doc["id"] + ".json" and loaded.doc["id"] in rows
                ):
                    continue
                self.sessions.append(loaded)
            for sid, doc in rows.items():
                path = os.path.join(folder, sid + ".json")
                updated = instant_ns(doc["updated_at"]) or 0
                self.sessions.append(
                    SessionFile(path, sid + ".json", doc, len(locator(sid)), updated)
                )
                self.rows.add(path)

    def _row_first(self, candidates: list[SessionFile]) -> SessionFile | None:
        def key(s: SessionFile) -> tuple[int, bool, str]:
            return (instant_ns(s.doc["updated_at"]) or 0, s.path in self.rows, s.doc["id"])

        if not candidates:
            return None
        ordered = sorted(candidates, key=key, reverse=True)
        if len(ordered) > 1 and key(ordered[0]) == key(ordered[1]):
            raise Ambiguous(f"{ordered[0].path} and {ordered[1].path} tie")
        return ordered[0]

    def resume(self, workspace: str, window: int | None = None) -> dict[str, Any] | None:
        matching = [s for s in self.sessions if belongs_to(s, workspace)]
        if any(os.path.dirname(s.path) in self.db_folders for s in matching):
            winner = self._row_first(matching)
        else:
            winner = reference.newest_file(matching)
        return None if winner is None else answer(winner, window)

    def get(self, session_id: str, window: int | None = None) -> dict[str, Any] | None:
        named = [
            s for s in self.sessions if s.name == f"{session_id}.json" and s.doc["id"] == session_id
        ]
        rows = [s for s in named if s.path in self.rows]
        winner = self._row_first(rows) if rows else reference.newest_file(named)
        return None if winner is None else answer(winner, window)

    def list(
        self, workspace: str | None = None, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        return reference.listing(self.sessions, workspace, limit, offset)
