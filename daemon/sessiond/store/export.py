"""Database sessions in the shapes clients and the sink want: the legacy-shaped session object
`export_json` gives (cut to a window) and the history object.

Message bodies are kept as the agent serialized them (`msgspec.Raw` slices of the records), so
a message comes out byte for byte as a legacy file holds it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import msgspec
from sessionctl.document import InvalidSession
from sessionctl.store import (
    StoredSession,
    StoreError,
    history_lines,
    legacy_metadata,
    ordered_usage,
    summary_index,
)

from sessiond.index.database_records import StoredRecord, stored_record
from sessiond.index.decode import decode_session
from sessiond.index.records import split_session_path
from sessiond.store.follow import SHARED, StoreSet

_encoder = msgspec.json.Encoder()


class StoredUnavailable(Exception):
    """The row is gone, or cannot be read as the agent would (a blob mismatch, a bad record)."""


@dataclass(frozen=True, slots=True)
class StoredTail:
    record: StoredRecord  # the row as it was read with the tail
    session: msgspec.Raw
    dropped: int


def _read(record_path: str, window: int | None, stores: StoreSet) -> StoredSession:
    folder, session_id = split_session_path(record_path)
    try:
        stored = stores.read(folder, session_id, window)
    except StoreError as exc:
        raise StoredUnavailable(f"session {session_id} cannot be read: {exc}") from None
    if stored is None:
        raise StoredUnavailable(f"session {session_id} is no longer in its database")
    return stored


def stored_tail(record: StoredRecord, window: int, stores: StoreSet = SHARED) -> StoredTail:
    stored = _read(record.path, window, stores)
    row = stored.row
    folder = os.path.dirname(record.path)
    fresh = stored_record(folder, row.revision, row.header, row.message_count, row.tool_count)
    session = _session_object(stored)
    return StoredTail(fresh, msgspec.Raw(_encoder.encode(session)), stored.dropped)


def _session_object(stored: StoredSession) -> dict[str, Any]:
    """The legacy-shaped session object `export_json` gives for what was read."""
    row = stored.row
    try:
        header = decode_session(row.header.encode("utf-8"))
    except InvalidSession as exc:
        raise StoredUnavailable(f"session {row.session_id}: bad header: {exc}") from None
    doc = header.doc
    usage: dict[str, Any] = msgspec.json.decode(doc.usage)
    return {
        "id": doc.id,
        "title": header.title,
        "created_at": doc.created_at,
        "updated_at": doc.updated_at,
        "metadata": legacy_metadata(msgspec.json.decode(doc.metadata)),
        "agent": doc.agent,
        "messages": [msgspec.Raw(m.encode("utf-8")) for m in stored.messages],
        "pages": stored.pages,
        "summary_index": summary_index(stored.summaries, lambda b: msgspec.Raw(b.encode())),
        "tool_uses": [msgspec.Raw(t.encode("utf-8")) for t in stored.tool_uses],
        "usage": ordered_usage(usage),
    }


def stored_revision(path: str, stores: StoreSet = SHARED) -> int | None:
    """The indexed revision when `path` is a database session's slot, else None."""
    return stores.revision(path)


def stored_history(path: str, stores: StoreSet = SHARED) -> tuple[bytes, int, int] | None:
    """`(history object, revision, messages)` when `path` is a database session's slot, else
    None. Raises StoredUnavailable."""
    if not stores.claims(path):
        return None
    stored = _read(path, None, stores)
    return history_lines(stored), stored.row.revision, len(stored.messages)


def stored_document(path: str, stores: StoreSet = SHARED) -> tuple[bytes, int, int, bytes] | None:
    """`(history object, revision, messages, session document)` from one read, when `path` is
    a database session's slot, else None: the document is the legacy-shaped session, encoded
    compact, from which restore's parts are cut (docs/remote.md). Raises StoredUnavailable."""
    if not stores.claims(path):
        return None
    stored = _read(path, None, stores)
    document = _encoder.encode(_session_object(stored))
    return history_lines(stored), stored.row.revision, len(stored.messages), document
