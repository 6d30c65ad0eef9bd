"""The agent's two sidecar files as data: how each is encoded, and what the agent makes of
the bytes it finds (docs/agent-files.md, "The listing cache" and "The workspace index").

Encoding is serde_json's compact form, which `json.dumps(ensure_ascii=False, separators)`
matches byte for byte on strings and integers (docs/agent-files.md, "Encoding"). Parsing
mirrors serde's derive: a file the agent could not deserialize reads as empty
(`unwrap_or_default` / `load_sync`), so it is "corrupt" here and gets replaced.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sessiond.agentfiles.chrono import normalize_time
from sessiond.index.records import SessionRecord

U64_MAX = (1 << 64) - 1
U128_MAX = (1 << 128) - 1


def encode(entries: Mapping[str, Any]) -> bytes:
    """`{"entries":{...}}` compact; keys sorted so equal content always has equal bytes (the
    agent's HashMap order is random, so no order is more its own than another)."""
    doc = {"entries": dict(sorted(entries.items()))}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def lossy(text: str) -> str:
    """Rust's `to_string_lossy`: bytes that are not UTF-8 (surrogate-escaped in a Python path)
    become U+FFFD."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def is_utf8(text: str) -> bool:
    """Whether Rust's `Path::to_str` would succeed (the listing skips paths where it fails)."""
    if text.isascii():  # most text, and far cheaper than encoding it
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _reject(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise ValueError("repeated key")
    return doc


def _load(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
        if data.count(b'"entries"') > 1:
            # serde refuses a struct field given twice, where Python keeps the last one. The
            # hook that notices is slow, so it only runs when the name occurs twice at all.
            return json.loads(text, parse_constant=_reject, object_pairs_hook=_unique)
        return json.loads(text, parse_constant=_reject)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


# --- the workspace index ---------------------------------------------------------------------


def parse_index(data: bytes) -> dict[str, str] | None:
    """The entries `WorkspaceIndex::load_sync` reads, or None when it would read nothing
    (`entries` has no serde default, so `{}` is corrupt too)."""
    doc = _load(data)
    if not isinstance(doc, dict):
        return None
    entries = doc.get("entries")
    if not isinstance(entries, dict):
        return None
    # serde_json refuses a lone surrogate escape, which Python's parser lets through.
    if not all(isinstance(v, str) and is_utf8(v) and is_utf8(k) for k, v in entries.items()):
        return None
    return entries


# --- the listing cache -----------------------------------------------------------------------


def summary(record: SessionRecord) -> dict[str, Any] | None:
    """`SessionSummary` as the agent serializes it (field order of the struct), or None when
    chrono would not read the record's times."""
    created_at = normalize_time(record.created_at)
    updated_at = normalize_time(record.updated_at)
    if created_at is None or updated_at is None:
        return None
    return {
        "id": record.session_id,
        "title": record.title,
        "created_at": created_at,
        "updated_at": updated_at,
        "message_count": record.message_count,
        "agent": record.agent,
        "directory": record.directory,
    }


def cache_entry(record: SessionRecord) -> dict[str, Any] | None:
    """`CacheEntry` for the file version the record was read from; None when the agent would
    have no entry (an mtime before the epoch fails its `duration_since`)."""
    found = summary(record)
    mtime_ns = record.mtime_ns  # the fields, not `record.version`: no tuple built per record
    if found is None or not 0 <= mtime_ns <= U128_MAX:
        return None
    return {"mtime_ns": mtime_ns, "size": record.size, "summary": found}


def _uint(value: Any, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


def _str(value: Any) -> bool:
    return isinstance(value, str) and is_utf8(value)  # serde refuses lone surrogates


def _optional_str(doc: Mapping[str, Any], key: str) -> bool:
    return doc.get(key) is None or _str(doc[key])


def valid_cache_entry(entry: Any) -> bool:
    """Whether serde would deserialize `entry` as a `CacheEntry` (unknown keys are ignored,
    a missing `Option` is None)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("summary"), dict):
        return False
    found = entry["summary"]
    return (
        _uint(entry.get("mtime_ns"), U128_MAX)
        and _uint(entry.get("size"), U64_MAX)
        and _str(found.get("id"))
        and _str(found.get("agent"))
        and _uint(found.get("message_count"), U64_MAX)
        and _optional_str(found, "title")
        and _optional_str(found, "directory")
        and all(
            isinstance(found.get(k), str) and normalize_time(found[k]) is not None
            for k in ("created_at", "updated_at")
        )
    )


def parse_cache(data: bytes) -> dict[str, Any] | None:
    """The entries of a listing cache, or None when the file is not one at all. Entries are
    not checked one by one here (the agent reads nothing if one is bad): a file is only left
    alone when its entries equal the wanted ones, which are all valid, and the rules check
    each agent entry they keep with `valid_cache_entry`."""
    doc = _load(data)
    if not isinstance(doc, dict):
        return None
    entries = doc.get("entries", {})  # `entries` has a serde default in ListingCache
    return entries if isinstance(entries, dict) else None
