"""A cold-scan reference for the daemon's answers, written plainly so it is obviously right.

Independent of sessiond and of sessionctl.scan: it reads every session file of the given
folders with `json.load`, keeps the ones the agent could load, and answers `resume`, `get`
and `list` exactly as docs/protocol.md §7 and §8 define them. It has no byte
prefilter, so (like the daemon, unlike the agent's scan) it finds a session whose directory is
written through a symlink. Where the contract leaves an order open (two files with the same
mtime and name, two sessions with the same `updated_at` instant) it raises instead of guessing,
so a corpus can never make a test depend on an unspecified choice.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sessionctl.agent import normalize_components

NOT_SESSIONS = {".workspace_index.json", ".listing_cache.json"}
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
HEADER_KEYS = (
    "id",
    "title",
    "created_at",
    "updated_at",
    "directory",
    "agent",
    "model",
    "message_count",
    "tool_use_count",
    "path",
    "file_bytes",
    "mtime_ns",
)


class Ambiguous(AssertionError):
    """The contract does not say which of two sessions comes first: fix the corpus."""


# --- where sessions are (README, "What it serves") ------------------------------------------


def registry_folder(env: Mapping[str, str]) -> str | None:
    data_dir = env.get("CODETETHER_DATA_DIR", "")
    if data_dir.strip():
        return os.path.join(data_dir, "session-locations")
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg.startswith("/"):
        return os.path.join(xdg, "codetether-agent", "session-locations")
    if env.get("HOME"):
        return os.path.join(env["HOME"], ".local", "share", "codetether-agent", "session-locations")
    return None


def registered_folders(env: Mapping[str, str]) -> list[str]:
    """Every sessions folder a registry pointer names (the folder of the file it names)."""
    registry = registry_folder(env)
    if registry is None or not os.path.isdir(registry):
        return []
    folders = []
    for name in sorted(os.listdir(registry)):
        if not name.endswith(".path") or not os.path.isfile(os.path.join(registry, name)):
            continue  # a FIFO or a device is no pointer (and would block this read)
        with open(os.path.join(registry, name), encoding="utf-8") as fh:
            target = fh.read().strip()
        if target.startswith("/") and target.endswith(".json"):
            folders.append(os.path.dirname(target))
    return folders


def workspace_folder(workspace: str, env: Mapping[str, str]) -> str:
    """The sessions folder of the agent started in `workspace` (docs/agent-files.md, "Folders"):
    the nearest ancestor with `.git` that is neither `/` nor $HOME, else the workspace itself."""
    start = real_or_raw(workspace)
    current = start
    while current != "/":
        if current != env.get("HOME") and os.path.lexists(os.path.join(current, ".git")):
            return os.path.join(current, ".codetether-agent", "sessions")
        current = os.path.dirname(current)
    return os.path.join(start, ".codetether-agent", "sessions")


def served_folders(
    env: Mapping[str, str],
    sessions_dirs: Iterable[str] = (),
    asked: Iterable[str] = (),
) -> list[str]:
    """The four sources of README, "What it serves": the env folder, the registry's folders, the
    given folders and those of the workspaces asked about. Existing folders only, each once,
    resolved."""
    wanted = []
    data_dir = env.get("CODETETHER_DATA_DIR", "")
    if data_dir.strip():
        wanted.append(os.path.join(os.path.abspath(data_dir.strip()), "sessions"))
    wanted += registered_folders(env)
    wanted += list(sessions_dirs)
    wanted += [workspace_folder(w, env) for w in asked]
    result: list[str] = []
    for folder in wanted:
        if os.path.isdir(folder) and os.path.realpath(folder) not in result:
            result.append(os.path.realpath(folder))
    return result


# --- session files --------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionFile:
    path: str
    name: str
    doc: dict[str, Any]
    file_bytes: int
    mtime_ns: int


def is_session_name(name: str) -> bool:
    return (
        name.endswith(".json")
        and name != ".json"
        and name not in NOT_SESSIONS
        and not name.endswith(".checkpoint.json")
    )


_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)",
    re.ASCII,
)
_DAYS_PER_400_YEARS = 146_097


def instant_ns(text: Any) -> int | None:
    """An RFC 3339 time as nanoseconds since the epoch, as chrono reads a `DateTime<Utc>`
    (years 0000-9999 as written, a leap second, offsets to 23:59, nine fraction digits read);
    None when chrono refuses it."""
    if not isinstance(text, str):
        return None
    match = _TIME.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    if hour > 23 or minute > 59 or second > 60:
        return None
    cycles = year // 400  # the Gregorian calendar repeats every 400 years: year 0 is 400
    try:
        days = dt.date(year - 400 * cycles + 400, month, day).toordinal()
        days += (cycles - 1) * _DAYS_PER_400_YEARS
    except ValueError:
        return None
    seconds = (days - dt.date(1970, 1, 1).toordinal()) * 86_400
    seconds += hour * 3600 + minute * 60 + second
    zone = match.group(8)
    if zone not in ("Z", "z"):
        if int(zone[1:3]) > 23 or int(zone[4:6]) > 59:
            return None
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds * 10**9 + int((match.group(7) or "")[:9].ljust(9, "0"))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


SESSION_FIELDS = {"id", "title", "created_at", "updated_at", "metadata", "agent", "messages",
                  "pages", "summary_index", "tool_uses", "usage"}  # fmt: skip
METADATA_FIELDS = {"directory", "model", "knowledge_snapshot", "provenance", "auto_apply_edits",
                   "allow_network", "prior_context_allowed", "prior_context_turn_allowed",
                   "inherited_prior_context_allowed", "slash_autocomplete", "use_worktree",
                   "shared", "share_url", "rlm", "context_policy", "delegation",
                   "run_checkpoint"}  # fmt: skip


class _Object(dict):  # type: ignore[type-arg]
    """A parsed JSON object that knows which of its keys came more than once."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        names = [k for k, _ in pairs]
        self.twice = {k for k in names if names.count(k) > 1}


def _twice(obj: Any, fields: set[str]) -> bool:
    """serde's derive: a struct field given twice is an error (`duplicate field`)."""
    return bool(getattr(obj, "twice", set()) & fields)


def is_loadable(doc: Any) -> bool:
    """The fields the agent's `Session` deserializer cannot do without (docs/agent-files.md, "The
    session document")."""
    if not isinstance(doc, dict):
        return False
    metadata = doc.get("metadata")
    if _twice(doc, SESSION_FIELDS) or _twice(metadata, METADATA_FIELDS):
        return False
    return (
        isinstance(doc.get("id"), str)
        and (doc.get("title") is None or isinstance(doc["title"], str))
        and instant_ns(doc.get("created_at")) is not None
        and instant_ns(doc.get("updated_at")) is not None
        and isinstance(metadata, dict)
        and isinstance(metadata.get("shared"), bool)
        and (metadata.get("directory") is None or isinstance(metadata["directory"], str))
        and isinstance(doc.get("agent"), str)
        and isinstance(doc.get("messages"), list)
        and isinstance(doc.get("tool_uses"), list)
        and isinstance(doc.get("usage"), dict)
    )


MAX_SESSION_FILE_BYTES = 512 << 20
"""`Session::load` refuses larger files (docs/agent-files.md, "Size limits")."""


def load(path: str) -> SessionFile | None:
    """One session file, or None when the agent could not load it."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SESSION_FILE_BYTES:
            return None
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh, parse_constant=_refuse_constant, object_pairs_hook=_Object)
    except (OSError, ValueError, RecursionError):
        return None
    if not is_loadable(doc):
        return None
    return SessionFile(path, os.path.basename(path), doc, st.st_size, st.st_mtime_ns)


def _is_utf8(path: str) -> bool:
    """sessiond skips a file whose name is not UTF-8: no JSON answer could carry it."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def sessions_in(folders: Iterable[str]) -> list[SessionFile]:
    found = []
    for folder in folders:
        folder = os.path.realpath(folder)
        for name in sorted(os.listdir(folder)):
            if is_session_name(name) and _is_utf8(os.path.join(folder, name)):
                loaded = load(os.path.join(folder, name))
                if loaded is not None:
                    found.append(loaded)
    return found


# --- workspaces -----------------------------------------------------------------------------


def real_or_raw(path: str) -> str:
    """`std::fs::canonicalize(path).unwrap_or(path)`."""
    try:
        return os.path.realpath(path, strict=True)
    except OSError:
        return normalize_components(path)


def belongs_to(session: SessionFile, workspace: str) -> bool:
    """`metadata.directory` is the workspace: equal as written or once canonicalized."""
    directory = session.doc["metadata"].get("directory")
    if directory is None:
        return False
    wanted = real_or_raw(workspace)
    return normalize_components(directory) == wanted or real_or_raw(directory) == wanted


# --- answers --------------------------------------------------------------------------------


def header(session: SessionFile) -> dict[str, Any]:
    doc = session.doc
    return {
        "id": doc["id"],
        "title": doc.get("title"),
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
        "directory": doc["metadata"].get("directory"),
        "agent": doc["agent"],
        "model": doc["metadata"].get("model"),
        "message_count": len(doc["messages"]),
        "tool_use_count": len(doc["tool_uses"]),
        "path": session.path,
        "file_bytes": session.file_bytes,
        "mtime_ns": session.mtime_ns,
    }


def page_kind(message: dict[str, Any]) -> str:
    """`PageKind::classify` (docs/agent-files.md, "Page kinds")."""
    if message["role"] in ("system", "developer"):
        return "bootstrap"
    if message["role"] == "tool":
        return "evidence"
    if any(part.get("type") == "tool_result" for part in message["content"]):
        return "evidence"
    return "conversation"


def last(items: list[Any], window: int) -> list[Any]:
    return items[len(items) - window :] if window < len(items) else list(items)


def windowed(doc: dict[str, Any], window: int) -> tuple[dict[str, Any], int]:
    """`load_tail(window)` (docs/agent-files.md, "Tail load"): messages and tool_uses each cut to
    their last `window` elements, pages recomputed when they no longer match the messages."""
    messages = last(doc["messages"], window)
    tool_uses = last(doc["tool_uses"], window)
    pages = doc.get("pages", [])
    if len(pages) != len(messages):
        pages = [page_kind(m) for m in messages]
    session = {
        "id": doc["id"],
        "title": doc.get("title"),
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
        "metadata": doc["metadata"],
        "agent": doc["agent"],
        "messages": messages,
        "pages": pages,
        "summary_index": doc.get("summary_index", {"tree": [], "generation": 0, "lru_order": []}),
        "tool_uses": tool_uses,
        "usage": doc["usage"],
    }
    dropped = len(doc["messages"]) - len(messages) + len(doc["tool_uses"]) - len(tool_uses)
    return session, dropped


def answer(session: SessionFile, window: int | None) -> dict[str, Any]:
    """The body of a `resume`/`get` response (without `ok` and `source`)."""
    body: dict[str, Any] = {
        "session_id": session.doc["id"],
        "path": session.path,
        "header": header(session),
    }
    if window is not None:
        body["session"], body["dropped"] = windowed(session.doc, window)
        body["file_bytes"] = session.file_bytes
    return body


def newest_file(candidates: list[SessionFile]) -> SessionFile | None:
    """The agent's scan order: newest mtime first, ties to the greater file name."""

    def key(s: SessionFile) -> tuple[int, bytes]:
        return (s.mtime_ns, os.fsencode(s.name))

    if not candidates:
        return None
    ordered = sorted(candidates, key=key, reverse=True)
    if len(ordered) > 1 and key(ordered[0]) == key(ordered[1]):
        raise Ambiguous(f"{ordered[0].path} and {ordered[1].path} tie")
    return ordered[0]


def listing(
    sessions: list[SessionFile], workspace: str | None, limit: int, offset: int
) -> dict[str, Any]:
    """`list` over `sessions`: headers newest `updated_at` first (as instants), then the page
    asked for; `total`."""
    chosen = [s for s in sessions if workspace is None or belongs_to(s, workspace)]
    instants = [instant_ns(s.doc["updated_at"]) for s in chosen]
    if len(set(instants)) != len(instants):
        raise Ambiguous("two sessions have the same updated_at instant")
    chosen.sort(key=lambda s: instant_ns(s.doc["updated_at"]) or 0, reverse=True)
    return {
        "sessions": [header(s) for s in chosen[offset : offset + limit]],
        "total": len(chosen),
    }


class Snapshot:
    """The session files of some folders, read once, and the answers they give."""

    def __init__(self, folders: Iterable[str]) -> None:
        self.sessions = sessions_in(folders)

    def resume(self, workspace: str, window: int | None = None) -> dict[str, Any] | None:
        winner = newest_file([s for s in self.sessions if belongs_to(s, workspace)])
        return None if winner is None else answer(winner, window)

    def get(self, session_id: str, window: int | None = None) -> dict[str, Any] | None:
        """`Session::load(id)`: the file `<id>.json` holding that id (the newest, if several)."""
        named = [
            s for s in self.sessions if s.name == f"{session_id}.json" and s.doc["id"] == session_id
        ]
        winner = newest_file(named)
        return None if winner is None else answer(winner, window)

    def list(
        self, workspace: str | None = None, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        """Headers newest `updated_at` first (as instants), then the page asked for; `total`."""
        return listing(self.sessions, workspace, limit, offset)


def resume(
    folders: Iterable[str], workspace: str, window: int | None = None
) -> dict[str, Any] | None:
    return Snapshot(folders).resume(workspace, window)


def get(
    folders: Iterable[str], session_id: str, window: int | None = None
) -> dict[str, Any] | None:
    return Snapshot(folders).get(session_id, window)


def list_sessions(
    folders: Iterable[str], workspace: str | None = None, limit: int = 100, offset: int = 0
) -> dict[str, Any]:
    return Snapshot(folders).list(workspace, limit, offset)
