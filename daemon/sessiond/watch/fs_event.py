"""One file-system event as the watcher hands it to the indexer: what happened, and to which
path. Only the indexer reads these; nothing here reaches the wire or the logs."""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple


class FsKind(Enum):
    CHANGED = "changed"  # created, closed after a write, or moved in
    ATTRIB = "attrib"  # mode, owner or times set: the content may be the same, its readability not
    GONE = "gone"  # deleted, or moved away
    FOLDER_GONE = "folder_gone"  # the watched folder itself moved away (or its watch ended)
    FOLDER_DELETED = "folder_deleted"  # the watched folder itself deleted
    FOLDER_ATTRIB = "folder_attrib"  # the watched folder's mode, owner or times set
    OVERFLOW = "overflow"  # the kernel dropped events: the folder needs a rescan


class FsEvent(NamedTuple):
    kind: FsKind
    path: str  # the file's path; the folder's own for the FOLDER_* kinds and OVERFLOW
