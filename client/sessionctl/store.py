"""Reading the agent's SQLite session store (`sessions.sqlite3`) without ever writing it.

The agent's newer releases keep each folder's sessions in one SQLite database and shrink
`<id>.json` to a *locator* (docs/storage.md). This module holds what both the daemon and the
client's fallback scan need: how a locator looks, how the database is opened read-only, and the
few queries that rebuild a session in the legacy shape. Standard library only.

Safety rules (docs/storage.md, "Reading without writing"): `file:…?mode=ro` URI, `query_only`,
a busy timeout, never `immutable`, never a pragma that changes the file, and every read that
belongs together inside one short deferred transaction.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DATABASE_NAME = "sessions.sqlite3"
LOCATOR_PREFIX = b'{"codetether_store":1,'
LOCATOR_READ_BYTES = 4096
MAX_USER_VERSION = 2
BLOB_PREFIX = "@sha256:"
READ_BUSY_TIMEOUT_S = 1.0
USAGE_ORDER = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
)


class StoreError(Exception):
    """The database (or one session in it) cannot be read the way the agent would."""


class NewerStore(StoreError):
    """`user_version` above what this reader knows: the agent itself refuses such a file."""


class BlobMismatch(StoreError):
    """A blob's SHA-256 is not the one its reference names (the agent's integrity failure)."""


# --- locators --------------------------------------------------------------------------------


def is_locator(head: bytes) -> bool:
    """`marker::is_marker`: the first 22 bytes are the locator's."""
    return head[: len(LOCATOR_PREFIX)] == LOCATOR_PREFIX


def locator_id(data: bytes) -> str | None:
    """`marker::id`: the `id` of the JSON in the first 4096 bytes, else None."""
    try:
        value = json.loads(data[:LOCATOR_READ_BYTES].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    found = value.get("id") if isinstance(value, dict) else None
    return found if isinstance(found, str) else None


def locator_bytes(session_id: str) -> bytes:
    """The exact locator the agent writes for `session_id`."""
    escaped = json.dumps(session_id, ensure_ascii=False)
    return LOCATOR_PREFIX + b'"id":' + escaped.encode("utf-8") + b"}"


def locator_size(session_id: str) -> int:
    """`file_bytes` of a database session: the size of its locator (`TailLoad`)."""
    return len(locator_bytes(session_id))


def database_path(folder: str) -> str:
    return os.path.join(folder, DATABASE_NAME)


# --- opening ---------------------------------------------------------------------------------


def open_readonly(path: str, busy_timeout_s: float = READ_BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """A read-only connection to the database at `path`, checked for a known `user_version`.

    Autocommit mode (`isolation_level=None`): transactions are begun and ended explicitly, so
    none stays open between reads. Raises StoreError (NewerStore for a newer schema)."""
    if not os.path.isfile(path):
        raise StoreError(f"{path} does not exist")
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    try:
        conn = sqlite3.connect(
            uri, uri=True, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from None
    try:
        conn.execute("PRAGMA query_only=1")
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot read {path}: {exc}") from None
    if version > MAX_USER_VERSION:
        conn.close()
        raise NewerStore(f"{path} has user_version {version}; this reader knows up to 2")
    return conn


def data_version(conn: sqlite3.Connection) -> int:
    """`PRAGMA data_version`: changes whenever another connection committed."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def _has_sessions_table(conn: sqlite3.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='sessions'"
    ).fetchone()
    return row is not None


class _Snapshot:
    """One deferred read transaction: everything read inside comes from one snapshot."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN")
        return self.conn

    def __exit__(self, *exc: object) -> None:
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error:
            pass


def snapshot(conn: sqlite3.Connection) -> _Snapshot:
    return _Snapshot(conn)


# --- rows ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One `sessions` row: the session's header JSON and its counts."""

    session_id: str
    revision: int
    header: str
    message_count: int
    tool_count: int


def _revisions(conn: sqlite3.Connection) -> dict[str, int]:
    # Ids are TEXT and revisions INTEGER by the schema: no conversion per row.
    return dict(conn.execute("SELECT id, revision FROM sessions"))


def _rows(conn: sqlite3.Connection, ids: list[str] | None) -> list[Row]:
    query = "SELECT id, revision, header, message_count, tool_count FROM sessions"
    if ids is None:
        found = conn.execute(query).fetchall()
    else:
        found = []
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            found.extend(conn.execute(f"{query} WHERE id IN ({marks})", part).fetchall())
    return [Row(str(i), int(r), str(h), int(m), int(t)) for i, r, h, m, t in found]


def read_rows(conn: sqlite3.Connection, ids: list[str] | None = None) -> list[Row]:
    """The rows of `ids` (every row when None), from one snapshot (a brand-new database
    without tables has none)."""
    with snapshot(conn):
        return _rows(conn, ids) if _has_sessions_table(conn) else []


def read_revisions(conn: sqlite3.Connection) -> dict[str, int]:
    """`{id: revision}` of every row, from one snapshot: the `(id, revision)` diff of
    docs/storage.md compares it with what is indexed."""
    with snapshot(conn):
        return _revisions(conn) if _has_sessions_table(conn) else {}


# --- one session -----------------------------------------------------------------------------


@dataclass(slots=True)
class StoredSession:
    """What `store::load_sync(path, window)` reads for one session, blobs resolved."""

    row: Row
    messages: list[str]  # each message's JSON, exactly as the agent serialized it
    pages: list[str]
    tool_uses: list[str]
    summaries: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, node JSON)
    dropped: int = 0


def split_record(body: str) -> tuple[str, str]:
    """A message record `[<message>,"<page>"]` -> (message JSON, page). The page is a plain
    snake_case string, so the message is everything up to the last comma."""
    if not body.startswith("[") or not body.endswith("]"):
        raise StoreError("a message record is not a [message, page] array")
    comma = body.rfind(",")
    if comma < 0:
        raise StoreError("a message record has no page")
    try:
        page = json.loads(body[comma + 1 : -1])
    except ValueError:
        raise StoreError("a message record's page is not a JSON string") from None
    if not isinstance(page, str):
        raise StoreError("a message record's page is not a string")
    return body[1:comma], page


def resolve_body(conn: sqlite3.Connection, body: str) -> str:
    """A record body, with an `@sha256:` reference replaced by its checked blob."""
    if not body.startswith(BLOB_PREFIX):
        return body
    digest = body[len(BLOB_PREFIX) :]
    row = conn.execute("SELECT body FROM blobs WHERE hash=?", (digest,)).fetchone()
    if row is None:
        raise BlobMismatch(f"blob {digest[:16]}… is missing")
    blob = str(row[0])
    if hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest() != digest:
        raise BlobMismatch(f"session blob integrity failure: blob {digest[:16]}… does not match")
    return blob


def read_session(
    conn: sqlite3.Connection, session_id: str, window: int | None = None
) -> StoredSession | None:
    """One session as the agent's `load_tail(window)` reads it (None: no such row).

    `window` None loads everything. Raises StoreError for an unreadable record or blob."""
    limit = window
    with snapshot(conn):
        if not _has_sessions_table(conn):
            return None
        found = conn.execute(
            "SELECT revision, header, message_count, tool_count FROM sessions WHERE id=?",
            (session_id,),
        ).fetchone()
        if found is None:
            return None
        row = Row(session_id, int(found[0]), str(found[1]), int(found[2]), int(found[3]))
        start = 0 if limit is None else max(0, row.message_count - limit)
        tool_start = 0 if limit is None else max(0, row.tool_count - limit)
        messages, pages = [], []
        for (body,) in conn.execute(
            "SELECT body FROM records WHERE session_id=? AND kind=0 AND seq>=? AND seq<?"
            " ORDER BY seq",
            (session_id, start, row.message_count),
        ):
            message, page = split_record(resolve_body(conn, str(body)))
            messages.append(message)
            pages.append(page)
        tools = [
            resolve_body(conn, str(body))
            for (body,) in conn.execute(
                "SELECT body FROM records WHERE session_id=? AND kind=1 AND seq>=? AND seq<?"
                " ORDER BY seq",
                (session_id, tool_start, row.tool_count),
            )
        ]
        summaries = _read_summaries(conn, session_id, start, row.message_count)
    return StoredSession(row, messages, pages, tools, summaries, start + tool_start)


def _read_summaries(
    conn: sqlite3.Connection, session_id: str, start: int, message_count: int
) -> list[tuple[int, int, str]]:
    """`summaries::read(start, message_count)`: up to 128 `manual_summary` rows, newest
    first, inside the range, remapped to window-relative positions."""
    try:
        rows = conn.execute(
            "SELECT seq, end_seq, body FROM projections WHERE session_id=? AND"
            " name='manual_summary' AND seq>=? AND seq<? ORDER BY seq DESC LIMIT 128",
            (session_id, start, message_count),
        ).fetchall()
    except sqlite3.OperationalError:  # a version-1 database may lack the table
        return []
    return [(int(s) - start, int(e) - start, str(b)) for s, e, b in rows if int(e) <= message_count]


def summary_index(
    summaries: list[tuple[int, int, str]], node: Callable[[str], Any]
) -> dict[str, Any]:
    """The `summary_index` a fresh `SummaryIndex` gets from the stored summaries."""
    tree = sorted(summaries, key=lambda s: (s[0], s[1]))
    return {
        "tree": [[{"start": s, "end": e}, node(body)] for s, e, body in tree],
        "generation": 0,
        "lru_order": [{"start": s, "end": e} for s, e, _ in summaries],
    }


# The struct field orders of `SessionMetadata` and its nested types (the legacy file's order,
# which `export_json` gives, since it goes through the typed struct). The header stores them
# with sorted keys. Keys not listed keep their (sorted) order after the known ones.
_IDENTITY = ("tenant_id", "agent_identity_id", "agent_name", "origin", "worker_id", "key_id",
             "github_installation_id", "github_app_id")  # fmt: skip
_PROVENANCE = ("provenance_id", "session_id", "task_id", "run_id", "attempt_id", "issued_at",
               "identity")  # fmt: skip
_RLM = ("mode", "threshold", "max_iterations", "max_subcalls", "runtime", "root_model",
        "subcall_model", "history_trigger_messages")  # fmt: skip
_BELIEF = ("alpha", "beta", "n", "c_self", "kappa", "last_update")
_DELEGATION_CONFIG = ("gamma", "delta", "kappa", "lambda", "enabled")
_CHECKPOINT = ("reason", "original_objective", "max_step_budget", "session_id", "workspace",
               "message_count", "current_browser_url", "completed_actions", "blockers",
               "next_intended_action", "created_at")  # fmt: skip
_METADATA = ("directory", "model", "knowledge_snapshot", "provenance", "auto_apply_edits",
             "allow_network", "prior_context_allowed", "prior_context_turn_allowed",
             "inherited_prior_context_allowed", "slash_autocomplete", "use_worktree", "shared",
             "share_url", "rlm", "context_policy", "delegation", "run_checkpoint")  # fmt: skip


def _ordered(value: Any, order: tuple[str, ...]) -> Any:
    if not isinstance(value, dict):
        return value
    out = {k: value[k] for k in order if k in value}
    out.update((k, v) for k, v in value.items() if k not in out)
    return out


def legacy_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """`metadata` in the struct order the legacy file (and `export_json`) has."""
    out: dict[str, Any] = _ordered(meta, _METADATA)
    provenance = out.get("provenance")
    if isinstance(provenance, dict):
        provenance = _ordered(provenance, _PROVENANCE)
        provenance["identity"] = _ordered(provenance.get("identity"), _IDENTITY)
        out["provenance"] = provenance
    if "rlm" in out:
        out["rlm"] = _ordered(out["rlm"], _RLM)
    policy = out.get("context_policy")
    if isinstance(policy, dict):  # internally tagged: the tag comes first
        out["context_policy"] = _ordered(policy, ("policy",))
    delegation = out.get("delegation")
    if isinstance(delegation, dict):
        delegation = _ordered(delegation, ("beliefs", "config"))
        beliefs = delegation.get("beliefs")
        if isinstance(beliefs, dict):  # a BTreeMap: its keys stay sorted
            delegation["beliefs"] = {k: _ordered(v, _BELIEF) for k, v in beliefs.items()}
        delegation["config"] = _ordered(delegation.get("config"), _DELEGATION_CONFIG)
        out["delegation"] = delegation
    if isinstance(out.get("run_checkpoint"), dict):
        out["run_checkpoint"] = _ordered(out["run_checkpoint"], _CHECKPOINT)
    return out


def ordered_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """`usage` in the struct's field order (the header stores it with sorted keys)."""
    ordered = {k: usage[k] for k in USAGE_ORDER if k in usage}
    ordered.update((k, v) for k, v in usage.items() if k not in ordered)
    return ordered


def legacy_object(stored: StoredSession, header: dict[str, Any]) -> dict[str, Any]:
    """The session object the agent's `export_json` gives, in the legacy key order, built with
    the standard library (the daemon builds the same object from raw slices)."""
    return {
        "id": header["id"],
        "title": header.get("title"),
        "created_at": header["created_at"],
        "updated_at": header["updated_at"],
        "metadata": legacy_metadata(header["metadata"]),
        "agent": header["agent"],
        "messages": [json.loads(m) for m in stored.messages],
        "pages": list(stored.pages),
        "summary_index": summary_index(stored.summaries, json.loads),
        "tool_uses": [json.loads(t) for t in stored.tool_uses],
        "usage": ordered_usage(header["usage"]),
    }


def history_lines(stored: StoredSession) -> bytes:
    """The history object: each message as the agent serialized it, then `\\n`."""
    return b"".join(m.encode("utf-8", "surrogatepass") + b"\n" for m in stored.messages)
