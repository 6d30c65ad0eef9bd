"""A session file's document: what makes it valid, its header, and its windowed form.

The daemon decodes session files with msgspec (sessiond.index.decode); the client's fallback
scan decodes them with the standard library and uses this module. Both apply the same rules,
which are the parts of the agent's `Session` deserializer that a reader can fail on
(docs/agent-files.md, "The session document"): the checks are listed once here and mirrored
there, and tests/unit/index/test_document_rules.py holds both to the same cases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sessionctl.agent import (
    DEFAULT_SUMMARY_INDEX,
    METADATA_FIELDS,
    SESSION_FIELDS,
    classify_page,
    cut_tail,
    parse_rfc3339_ns,
)

SESSION_KEYS = (
    "id",
    "title",
    "created_at",
    "updated_at",
    "metadata",
    "agent",
    "messages",
    "pages",
    "summary_index",
    "tool_uses",
    "usage",
)
"""Top-level keys in the agent's serialization order; a windowed `session` has exactly these."""


class InvalidSession(ValueError):
    """The file is not a session the agent could load."""


def _optional_str(doc: Mapping[str, Any], key: str) -> None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidSession(f"{key} must be a string or null")


class KeyedObject(dict[str, Any]):
    """A JSON object as `object_pairs_hook` builds it, remembering the keys it saw twice."""

    repeated: frozenset[str] = frozenset()


def keyed_object(pairs: list[tuple[str, Any]]) -> KeyedObject:
    """`json.loads(..., object_pairs_hook=keyed_object)`: the last value wins, as with a dict,
    but a repeated key is remembered for `validate_document`."""
    obj = KeyedObject(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        repeated: set[str] = set()
        for key, _ in pairs:
            (repeated if key in seen else seen).add(key)
        obj.repeated = frozenset(repeated)
    return obj


def _no_duplicate_fields(doc: Any, fields: frozenset[str], where: str) -> None:
    repeated: frozenset[str] = getattr(doc, "repeated", frozenset()) & fields
    if repeated:
        raise InvalidSession(f"duplicate field `{min(repeated)}`{where}")


def validate_document(doc: Any) -> None:
    """Raise InvalidSession unless `doc` has what the agent's deserializer requires. Parsed
    with `keyed_object`, a field of the agent's structs given twice is refused as serde does."""
    if not isinstance(doc, dict):
        raise InvalidSession("not a JSON object")
    _no_duplicate_fields(doc, SESSION_FIELDS, "")
    _no_duplicate_fields(doc.get("metadata"), METADATA_FIELDS, " in metadata")
    if not isinstance(doc.get("id"), str):
        raise InvalidSession("id must be a string")
    _optional_str(doc, "title")
    for key in ("created_at", "updated_at"):
        if parse_rfc3339_ns(doc.get(key)) is None:
            raise InvalidSession(f"{key} must be an RFC 3339 time")
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        raise InvalidSession("metadata must be an object")
    if not isinstance(meta.get("shared"), bool):
        raise InvalidSession("metadata.shared must be a boolean")
    for key in ("directory", "model", "knowledge_snapshot", "share_url"):
        _optional_str(meta, key)
    if not isinstance(doc.get("agent"), str):
        raise InvalidSession("agent must be a string")
    for key in ("messages", "tool_uses"):
        if not isinstance(doc.get(key), list):
            raise InvalidSession(f"{key} must be an array")
    if not isinstance(doc.get("usage"), dict):
        raise InvalidSession("usage must be an object")


def make_header(
    *,
    session_id: str,
    title: str | None,
    created_at: str,
    updated_at: str,
    directory: str | None,
    agent: str,
    model: str | None,
    message_count: int,
    tool_use_count: int,
    path: str,
    file_bytes: int,
    mtime_ns: int,
) -> dict[str, Any]:
    """The `header` object of the protocol, in one place for both decoders."""
    return {
        "id": session_id,
        "title": title,
        "created_at": created_at,
        "updated_at": updated_at,
        "directory": directory,
        "agent": agent,
        "model": model,
        "message_count": message_count,
        "tool_use_count": tool_use_count,
        "path": path,
        "file_bytes": file_bytes,
        "mtime_ns": mtime_ns,
    }


def header_of(doc: Mapping[str, Any], path: str, file_bytes: int, mtime_ns: int) -> dict[str, Any]:
    """The header of a validated document."""
    meta = doc["metadata"]
    return make_header(
        session_id=doc["id"],
        title=doc.get("title"),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        directory=meta.get("directory"),
        agent=doc["agent"],
        model=meta.get("model"),
        message_count=len(doc["messages"]),
        tool_use_count=len(doc["tool_uses"]),
        path=path,
        file_bytes=file_bytes,
        mtime_ns=mtime_ns,
    )


def message_page(message: Any) -> str:
    """The page kind of one decoded message."""
    if not isinstance(message, Mapping):
        return classify_page(None, ())
    content = message.get("content")
    parts = content if isinstance(content, list) else ()
    types = [p.get("type") for p in parts if isinstance(p, Mapping)]
    return classify_page(message.get("role"), types)


def pages_after_load(pages: Any, kept_messages: Sequence[Any]) -> Any:
    """`normalize_sidecars` step 2: pages are recomputed when they do not match the messages."""
    if isinstance(pages, list) and len(pages) == len(kept_messages):
        return pages
    return [message_page(m) for m in kept_messages]


def windowed_session(doc: Mapping[str, Any], window: int) -> tuple[dict[str, Any], int]:
    """The session object `load_tail(window)` yields, and its `dropped` count."""
    messages, dropped_messages = cut_tail(doc["messages"], window)
    tool_uses, dropped_tool_uses = cut_tail(doc["tool_uses"], window)
    session = {
        "id": doc["id"],
        "title": doc.get("title"),
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
        "metadata": doc["metadata"],
        "agent": doc["agent"],
        "messages": messages,
        "pages": pages_after_load(doc.get("pages", []), messages),
        "summary_index": doc.get("summary_index", DEFAULT_SUMMARY_INDEX),
        "tool_uses": tool_uses,
        "usage": doc["usage"],
    }
    return session, dropped_messages + dropped_tool_uses
