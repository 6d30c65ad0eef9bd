"""What of a session is searchable, read from its file or its database row (docs/search.md,
"What is indexed").

`read_session_text(record, start)` is the one step that knows where a session's messages come
from: a legacy JSON file, or the agent's database for a record of a row (docs/storage.md).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from dataclasses import dataclass, field

import msgspec
from sessionctl.agent import MAX_SESSION_FILE_BYTES
from sessionctl.store import StoreError, database_path, open_readonly, read_session

from sessiond.index.database_records import StoredRecord
from sessiond.index.records import SessionRecord

MESSAGE_HEAD_CHARS = 12 * 1024
MESSAGE_TAIL_CHARS = 4 * 1024
"""A message's text longer than head + tail is indexed as its first 12 KiB and last 4 KiB
(characters): a tool result's file dump is cut, its error at the end is kept."""
TEXT_PARTS = frozenset({"text", "tool_result"})


class _Part(msgspec.Struct):
    type: str | None = None
    text: str | None = None  # a `text` part
    content: str | None = None  # a `tool_result` part


class _Message(msgspec.Struct):
    role: str | None = None
    content: list[_Part] = []


class _File(msgspec.Struct):
    id: str
    title: str | None = None
    messages: list[msgspec.Raw] = []


class _Title(msgspec.Struct):
    title: str | None = None


_file_decoder = msgspec.json.Decoder(_File)
_title_decoder = msgspec.json.Decoder(_Title)
_message_decoder = msgspec.json.Decoder(_Message)


class Unreadable(Exception):
    """The session's file cannot be read or decoded now (the indexer will say what it is)."""


class Gone(Unreadable):
    """The file was removed since the indexer saw it: its removal is on its way."""


@dataclass(slots=True)
class MessageText:
    index: int
    role: str
    text: str


@dataclass(slots=True)
class SessionText:
    title: str | None
    message_count: int
    prefix_digest: bytes  # of the first `start` messages' JSON: equal means the session grew
    messages: list[MessageText] = field(default_factory=list)  # from `start` on
    all_messages_digest: bytes = b""  # of every message's JSON, to remember for the next time
    bytes_read: int = 0


def message_text(raw: msgspec.Raw | bytes) -> tuple[str, str]:
    """(role, searchable text) of one message: its text parts and tool results, capped."""
    try:
        message = _message_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "", ""
    pieces = []
    for part in message.content:
        if part.type == "text" and part.text:
            pieces.append(part.text)
        elif part.type == "tool_result" and part.content:
            pieces.append(part.content)
    text = "\n".join(pieces)
    if len(text) > MESSAGE_HEAD_CHARS + MESSAGE_TAIL_CHARS:
        text = text[:MESSAGE_HEAD_CHARS] + "\n…\n" + text[-MESSAGE_TAIL_CHARS:]
    return message.role if isinstance(message.role, str) else "", text


def _digests(messages: list[msgspec.Raw] | list[bytes], start: int) -> tuple[bytes, bytes]:
    """(digest of messages[:start], digest of all): one pass over the bytes."""
    h = hashlib.blake2b(digest_size=16)
    prefix = b""
    for index, raw in enumerate(messages):
        if index == start:
            prefix = h.copy().digest()
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw)
    whole = h.digest()
    return (prefix if start < len(messages) else whole), whole


def read_session_text(record: SessionRecord, start: int) -> SessionText:
    """The title, and the messages from index `start` on, of the session `record` names, with
    the digest of the messages before `start` (the caller compares it with the one it kept)."""
    if isinstance(record, StoredRecord):
        return _row_text(record, start)
    try:
        with open(record.path, "rb") as fh:
            data = fh.read(MAX_SESSION_FILE_BYTES + 1)
    except FileNotFoundError:
        raise Gone(record.path) from None
    except OSError as exc:
        raise Unreadable(exc.strerror or str(exc)) from None
    try:
        doc = _file_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise Unreadable(str(exc)[:200]) from None
    return _text_of(doc.title, doc.messages, start, len(data))


def _row_text(record: StoredRecord, start: int) -> SessionText:
    """The same for a session of the agent's database: one short read-only snapshot."""
    try:
        conn = open_readonly(database_path(os.path.dirname(record.path)))
        try:
            stored = read_session(conn, record.session_id)
        finally:
            conn.close()
    except (sqlite3.Error, StoreError, OSError) as exc:
        raise Unreadable(str(exc)[:200]) from None
    if stored is None:
        raise Gone(record.path)
    try:
        title = _title_decoder.decode(stored.row.header).title
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Unreadable(f"header: {exc}"[:200]) from None
    messages = [message.encode("utf-8", "surrogatepass") for message in stored.messages]
    return _text_of(title, messages, start, sum(len(m) for m in messages))


def _text_of(
    title: str | None, messages: list[msgspec.Raw] | list[bytes], start: int, bytes_read: int
) -> SessionText:
    start = min(start, len(messages))
    prefix, whole = _digests(messages, start)
    found = SessionText(
        title=title,
        message_count=len(messages),
        prefix_digest=prefix,
        all_messages_digest=whole,
        bytes_read=bytes_read,
    )
    for index in range(start, len(messages)):
        role, text = message_text(messages[index])
        if text:
            found.messages.append(MessageText(index, role, text))
    return found
