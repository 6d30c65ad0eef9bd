"""`sessiond doctor`'s look at the agent's databases: can each be read the way the daemon
reads it (read-only, a known `user_version`), and how many sessions it holds."""

from __future__ import annotations

import os
import sqlite3

from sessionctl import store


def database_lines(folder: str) -> list[tuple[str, str]]:
    """`(kind, text)` lines for `folder`'s `sessions.sqlite3`: none when it has no database."""
    path = store.database_path(folder)
    if not os.path.isfile(path):
        return []
    try:
        conn = store.open_readonly(path)
    except store.NewerStore as exc:
        return [("problem", f"agent database {exc}: upgrade sessiond to serve its sessions")]
    except store.StoreError as exc:
        return [("problem", f"agent database cannot be read: {exc}; its folder's files are served")]
    try:
        rows = len(store.read_revisions(conn))
    except sqlite3.Error as exc:
        return [("problem", f"agent database {path} cannot be read: {exc}")]
    finally:
        conn.close()
    return [("ok", f"agent database {path}: {rows} sessions, read-only")]
