"""Index records of sessions that live in the agent's database (`sessions.sqlite3`).

A database session is indexed in the slot of its locator `<folder>/<id>.json`, the path the
agent's `session_path` gives, so a legacy file of the same id in that folder is replaced by
the row (docs/storage.md: the row wins). It has no file version of its own: `revision` is the
per-session change counter, `size` the locator's size (the store's `file_bytes`), and
`mtime_ns` the `updated_at` instant, since a save no longer touches any file.
"""

from __future__ import annotations

import os

from sessionctl.store import locator_size

from sessiond.index.decode import decode_session
from sessiond.index.records import FileVersion, SessionRecord


class StoredRecord(SessionRecord, gc=False, eq=False):
    revision: int = 0

    @property
    def version(self) -> FileVersion:
        # What the tail cache keys on: a new revision is a new version.
        return FileVersion(0, self.revision, self.size, self.updated_ns)

    def is_version(self, st: os.stat_result) -> bool:
        return False  # no file is this record's version: its locator never changes

    @property
    def resume_key(self) -> tuple[int, str, str]:
        return (self.updated_ns, self.file_name, self.path)


def stored_record(
    folder: str, revision: int, header: str | bytes, message_count: int, tool_count: int
) -> StoredRecord:
    """The record of one `sessions` row. Raises InvalidSession for a header the agent could not
    decode (the same rules as a session file's)."""
    decoded = decode_session(header.encode("utf-8") if isinstance(header, str) else header)
    session_id = decoded.doc.id
    path = os.path.join(folder, session_id + ".json")
    size = locator_size(session_id)
    record = StoredRecord.from_decoded(path, FileVersion(0, 0, size, decoded.updated_ns), decoded)
    record.revision = revision
    record.message_count = message_count
    record.tool_use_count = tool_count
    record.mtime_ns = decoded.updated_ns
    return record


def is_stored(record: SessionRecord) -> bool:
    return isinstance(record, StoredRecord)


def answer_order(record: SessionRecord) -> tuple[int, bool, str]:
    """`resume` order where a database is involved: newest `updated_at` as an instant, then
    the row before a file, then the greater id."""
    return (record.updated_ns, isinstance(record, StoredRecord), record.session_id)
