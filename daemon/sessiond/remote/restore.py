"""Writing a restored session into a sessions folder the agent's way: `<id>.json.tmp`, fsync,
rename, fsync the folder (interface: the one session file sessiond ever writes, on a user's
request). It never replaces a file and never writes an id the folder's database holds; on any
failure the temporary file is removed, so nothing is left half-written.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from sessiond.index.records import SESSION_SUFFIX

DATABASE_NAME = "sessions.sqlite3"


class Action(StrEnum):
    CREATED = "created"
    UNCHANGED = "unchanged"


class Refused(Exception):
    """The restore would replace what is there; the message says what."""


@dataclass(frozen=True)
class Plan:
    path: str
    action: Action


def plan(folder: str, session_id: str, data: bytes) -> Plan:
    """What a restore of `data` into `folder` does. Raises Refused or OSError."""
    path = os.path.join(folder, session_id + SESSION_SUFFIX)
    if _database_holds(folder, session_id):
        raise Refused(
            f"the database {os.path.join(folder, DATABASE_NAME)} holds a session "
            f"{session_id}; restore it elsewhere with --workspace"
        )
    try:
        with open(path, "rb") as fh:
            local = fh.read()
    except FileNotFoundError:
        return Plan(path, Action.CREATED)
    if local == data or _same_json(local, data):
        return Plan(path, Action.UNCHANGED)
    raise Refused(f"{path} exists and differs from the copy in the bucket; it is left as it is")


def _same_json(a: bytes, b: bytes) -> bool:
    try:
        return bool(json.loads(a) == json.loads(b))
    except ValueError:
        return False


def _database_holds(folder: str, session_id: str) -> bool:
    path = os.path.join(folder, DATABASE_NAME)
    if not os.path.exists(path):
        return False
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
        try:
            db.execute("PRAGMA query_only = 1")
            row = db.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise Refused(f"cannot read the database {path} to check for {session_id}: {exc}") from None
    return row is not None


def write(folder: str, session_id: str, data: bytes) -> str:
    """Create `<folder>/<id>.json` holding `data`. Raises Refused or OSError; leaves no tmp."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, session_id + SESSION_SUFFIX)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if os.path.lexists(path):  # the agent saved it meanwhile
            raise Refused(f"{path} appeared while restoring; it is left as it is")
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path
