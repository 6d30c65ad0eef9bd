"""What a change to the index was, as the indexer tells its listeners: a session saved (added or
read again) or removed. The wire's `session_saved` / `session_removed` events are made from it
at the edge (docs/protocol.md, "The `watch` stream")."""

from __future__ import annotations

from enum import Enum


class Change(Enum):
    SAVED = "saved"
    REMOVED = "removed"
