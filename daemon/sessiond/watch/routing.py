"""Where a file-system event goes, and which workspaces a confined folder answers for: the pure
path rules of the indexer, kept apart from its thread and its state so they can be read and
tested on their own."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from sessionctl.agent import (
    LISTING_CACHE_NAME,
    POINTER_SUFFIX,
    WORKSPACE_INDEX_NAME,
    canonicalize,
    is_session_file_name,
    is_utf8_name,
    workspace_sessions_dir,
)

from sessiond.store.follow import is_database_event
from sessiond.watch.barrier import is_cookie
from sessiond.watch.fs_event import FsEvent, FsKind
from sessiond.watch.served import folder_key

AGENT_FILE_NAMES = (WORKSPACE_INDEX_NAME, LISTING_CACHE_NAME)


class Route(Enum):
    FOLDER_GONE = "folder gone"  # the served folder itself deleted or moved away
    FOLDER_ATTRIB = "folder attrib"  # the served folder's mode may have changed
    OVERFLOW = "overflow"  # the folder lost events
    COOKIE = "cookie"  # a `sync` cookie written: every earlier event of its folder was read
    POINTER = "pointer"  # a registry location pointer written
    AGENT_FILE = "agent file"  # an event on one of the agent's sidecar files
    DATABASE = "database"  # the agent's database or its WAL: maybe a commit
    SESSION_FILE = "session file"  # a session file to read again
    UNDECODABLE = "undecodable"  # a session file whose name is not UTF-8: never served
    IGNORED = "ignored"


def route(event: FsEvent) -> Route:
    """What the indexer does with `event`."""
    kind, path = event
    if kind in (FsKind.FOLDER_GONE, FsKind.FOLDER_DELETED):
        return Route.FOLDER_GONE
    if kind is FsKind.FOLDER_ATTRIB:
        return Route.FOLDER_ATTRIB
    if kind is FsKind.OVERFLOW:
        return Route.OVERFLOW
    # A cookie or a pointer matters once written; its removal says nothing.
    if is_cookie(path):
        return Route.COOKIE if kind is FsKind.CHANGED else Route.IGNORED
    if path.endswith(POINTER_SUFFIX):
        return Route.POINTER if kind is FsKind.CHANGED else Route.IGNORED
    name = os.path.basename(path)
    if name in AGENT_FILE_NAMES:
        return Route.AGENT_FILE
    if is_database_event(name):
        return Route.DATABASE
    if is_session_file_name(name):
        return Route.SESSION_FILE if is_utf8_name(path) else Route.UNDECODABLE
    return Route.IGNORED


@dataclass
class PendingReads:
    """What one batch of events leaves to read: each file once, in the order first seen (a
    burst of saves costs one decode), and each folder's database once."""

    files: dict[str, bool] = field(default_factory=dict)
    """path -> whether its mode may have changed (read again even at the same version)"""
    databases: dict[str, None] = field(default_factory=dict)  # folders, as an ordered set

    def add(self, route: Route, event: FsEvent) -> None:
        """Note a SESSION_FILE or DATABASE event."""
        if route is Route.DATABASE:
            self.databases[os.path.dirname(event.path)] = None
        elif route is Route.SESSION_FILE:
            attrib = event.kind is FsKind.ATTRIB
            self.files[event.path] = self.files.get(event.path, False) or attrib

    def take(self) -> tuple[list[str], list[tuple[str, bool]]]:
        """The database folders and the files (with their reread flag) noted, and forget them."""
        databases, files = list(self.databases), list(self.files.items())
        self.databases.clear()
        self.files.clear()
        return databases, files


def owns_workspace(folder: str, env: Mapping[str, str]) -> Callable[[str], bool]:
    """Whether a workspace's own sessions folder (by the agent's rules) is `folder`: what a
    folder served only because workspaces were asked about answers for (docs/protocol.md,
    "status"). Each workspace is judged once."""
    judged: dict[str, bool] = {}

    def allows(workspace: str) -> bool:
        verdict = judged.get(workspace)
        if verdict is None:
            own = workspace_sessions_dir(canonicalize(workspace), env)
            verdict = judged[workspace] = folder_key(own) == folder
        return verdict

    return allows
