"""The codetether agent's own rules, as pure functions shared by the client and the daemon.

Everything here restates behaviour of the agent (see docs/agent-files.md): which
files are sessions, where sessions directories are, how workspaces are compared, how a tail
window is cut. Keeping it in one module means the daemon and the client's fallback scan can
never disagree about them. Standard library only.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from sessionctl.regular import read_regular

T = TypeVar("T")

AGENT_DIR_NAME = ".codetether-agent"
SESSIONS_DIR_NAME = "sessions"
REGISTRY_DIR_NAME = "session-locations"
POINTER_SUFFIX = ".path"
WORKSPACE_INDEX_NAME = ".workspace_index.json"
LISTING_CACHE_NAME = ".listing_cache.json"
_NOT_SESSIONS = frozenset({WORKSPACE_INDEX_NAME, LISTING_CACHE_NAME})
# The SQLite generation's own files (docs/storage.md): the import backup, the database and
# its WAL, and the temporary names locators and snapshots are written under.
_NOT_SESSION_SUFFIXES = (".checkpoint.json", ".legacy.json")
_NOT_SESSION_PREFIXES = ("sessions.sqlite3", ".tmp", ".session-")
MAX_SESSION_ID_BYTES = 128
SESSION_FIELDS = frozenset(
    {"id", "title", "created_at", "updated_at", "metadata", "agent", "messages", "pages",
     "summary_index", "tool_uses", "usage"}
)  # fmt: skip
"""The fields of the agent's `Session` struct: serde's derive refuses a file in which one of
them appears twice (`duplicate field`); other keys are ignored, repeated or not."""
METADATA_FIELDS = frozenset(
    {"directory", "model", "knowledge_snapshot", "provenance", "auto_apply_edits",
     "allow_network", "prior_context_allowed", "prior_context_turn_allowed",
     "inherited_prior_context_allowed", "slash_autocomplete", "use_worktree", "shared",
     "share_url", "rlm", "context_policy", "delegation", "run_checkpoint"}
)  # fmt: skip
"""The same for `SessionMetadata` (docs/agent-files.md, "The session document")."""
MAX_SESSION_FILE_BYTES = 512 * 1024 * 1024
"""The agent refuses to load larger files (`MAX_SESSION_FILE_BYTES`), so they are no sessions."""


# --- which files are sessions -------------------------------------------------------------


def is_utf8_name(name: str) -> bool:
    """Whether a file name (as os.listdir gives it) is valid UTF-8. The agent loads a session
    whose name is not, but no JSON answer can carry such a name faithfully, so sessiond and
    the fallback skip those files (the daemon logs `session_name_undecodable`)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_session_file_name(name: str) -> bool:
    """The agent's listing rule: extension `json`, minus its two sidecar indexes, checkpoints
    and the store's import backups (`*.legacy.json`); the store's temporary files never count.

    Rust's `Path::extension` gives nothing for a bare dot-file such as `.json`, so that is no
    session either.
    """
    if not name.endswith(".json") or name == ".json":
        return False
    if name.startswith(_NOT_SESSION_PREFIXES) or name.endswith(_NOT_SESSION_SUFFIXES):
        return False
    return name not in _NOT_SESSIONS


def session_id_from_file_name(name: str) -> str:
    return name[: -len(".json")]


def is_valid_session_id(session_id: object) -> bool:
    """`Session::session_path`'s check: 1..128 bytes of alphanumerics, `-` or `_`."""
    if not isinstance(session_id, str) or not session_id:
        return False
    if len(session_id.encode("utf-8", "surrogatepass")) > MAX_SESSION_ID_BYTES:
        return False
    return all(ch.isalnum() or ch in "-_" for ch in session_id)


# --- paths and workspaces ------------------------------------------------------------------


def normalize_components(path: str) -> str:
    """Spell a path the way Rust's `Path` compares it: repeated `/`, `.` parts and a trailing
    `/` do not count (`..` does, and is kept)."""
    if not path:
        return path
    absolute = path.startswith("/")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if path.startswith("./") and not absolute:
        parts.insert(0, ".")
    joined = "/".join(parts)
    return "/" + joined if absolute else (joined or ".")


def canonicalize(path: str) -> str:
    """`std::fs::canonicalize(p).unwrap_or(p)`: resolve symlinks of an existing absolute path,
    else keep the path as written (normalized as Rust compares paths)."""
    if os.path.isabs(path):
        try:
            return os.path.realpath(path, strict=True)
        except (OSError, ValueError):
            pass
    return normalize_components(path)


def _env_value(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value


def data_dir_override(env: Mapping[str, str]) -> str | None:
    """`CODETETHER_DATA_DIR`, trimmed, when set and not blank."""
    value = _env_value(env, "CODETETHER_DATA_DIR")
    return value.strip() if value is not None else None


def global_root(env: Mapping[str, str]) -> str | None:
    """The folder holding the location registry: `CODETETHER_DATA_DIR` (raw) when set, else the
    `directories` crate's data dir for `ai.codetether.codetether-agent` on Linux."""
    override = _env_value(env, "CODETETHER_DATA_DIR")
    if override is not None:
        return override
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "codetether-agent")
    home = env.get("HOME")
    if home:
        return os.path.join(home, ".local", "share", "codetether-agent")
    return None


def registry_dir(env: Mapping[str, str]) -> str | None:
    root = global_root(env)
    return os.path.join(root, REGISTRY_DIR_NAME) if root else None


def env_sessions_dir(env: Mapping[str, str]) -> str | None:
    """The first folder served (README, "What it serves"): `$CODETETHER_DATA_DIR/sessions`."""
    override = data_dir_override(env)
    if override is None:
        return None
    return os.path.join(os.path.abspath(override), SESSIONS_DIR_NAME)


def _is_unsafe_workspace_root(path: str, env: Mapping[str, str]) -> bool:
    home = env.get("HOME", "")
    return os.path.dirname(path) == path or path == "/" or (bool(home) and path == home)


def workspace_sessions_dir(workspace: str, env: Mapping[str, str]) -> str:
    """Source 4: the sessions folder the agent uses when started in `workspace` without
    `CODETETHER_DATA_DIR`: the nearest ancestor (itself first) that has `.git` and is neither
    `/` nor `$HOME`, else the workspace itself, plus `.codetether-agent/sessions`."""
    current = workspace
    while True:
        if not _is_unsafe_workspace_root(current, env) and os.path.lexists(
            os.path.join(current, ".git")
        ):
            return os.path.join(current, AGENT_DIR_NAME, SESSIONS_DIR_NAME)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return os.path.join(workspace, AGENT_DIR_NAME, SESSIONS_DIR_NAME)


def pointer_target_dir(content: bytes) -> str | None:
    """The sessions folder named by a registry pointer (`<id>.path`), or None when the pointer
    does not name an absolute `*.json` path."""
    target = content.decode("utf-8", "replace").strip()
    if not target or not os.path.isabs(target) or not target.endswith(".json"):
        return None
    return os.path.dirname(os.path.normpath(target))


MAX_POINTER_BYTES = 64 * 1024  # a path, not a file: the agent writes a few hundred bytes


def read_pointer(path: str) -> bytes | None:
    """A registry pointer's bytes, or None when there is none to read: a FIFO, a device or an
    oversized file at its name is no pointer (and must not block the reader)."""
    try:
        return read_regular(path, MAX_POINTER_BYTES)[1]
    except OSError:
        return None


def read_registry(registry: str) -> list[str]:
    """Every sessions folder named by the pointers in `registry` (deduplicated, sorted)."""
    dirs: set[str] = set()
    try:
        names = os.listdir(registry)
    except OSError:
        return []
    for name in names:
        if not name.endswith(POINTER_SUFFIX):
            continue
        content = read_pointer(os.path.join(registry, name))
        target = pointer_target_dir(content) if content is not None else None
        if target:
            dirs.add(target)
    return sorted(dirs)


def json_escaped(text: str) -> str:
    """`text` as serde_json writes it inside a string (no quotes): raw UTF-8, `/` unescaped."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


# --- time ------------------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))\Z",
    re.ASCII,  # chrono reads ASCII digits only; `\d` alone would take any script's
)


def parse_rfc3339_ns(text: object) -> int | None:
    """Nanoseconds since the epoch for an RFC 3339 time as chrono reads it into a
    `DateTime<Utc>`; None when chrono refuses it. chrono's range, not Python's: any year
    0000-9999 as written (the proleptic Gregorian calendar, so also years the offset moves
    outside it), a leap second `:60`, offsets up to 23:59, and at most nine fraction digits
    read (more are skipped)."""
    if not isinstance(text, str):
        return None
    match = _RFC3339.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    if not 1 <= month <= 12 or not 1 <= day <= days_in_month(year, month):
        return None
    if hour > 23 or minute > 59 or second > 60:
        return None
    offset = 0
    if match.group(9):
        offset_h, offset_m = int(match.group(10)), int(match.group(11))
        if offset_h > 23 or offset_m > 59:
            return None
        offset = (offset_h * 3600 + offset_m * 60) * (1 if match.group(9) == "+" else -1)
    # A leap second is chrono's :59 plus a whole second of nanoseconds: one second later.
    whole = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
    nanos = int((match.group(7) or "0")[:9].ljust(9, "0"))
    return (whole - offset) * 1_000_000_000 + nanos


def days_in_month(year: int, month: int) -> int:
    """Days in `month` of `year`, proleptic Gregorian (shared with the daemon's chrono)."""
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def autosi_fraction(nanos: int) -> str:
    """chrono's `SecondsFormat::AutoSi`: nothing for a whole second, else the shortest of 3, 6
    or 9 digits."""
    if nanos == 0:
        return ""
    if nanos % 1_000_000 == 0:
        return f".{nanos // 1_000_000:03d}"
    if nanos % 1_000 == 0:
        return f".{nanos // 1_000:06d}"
    return f".{nanos:09d}"


def format_rfc3339_ns(ns: int) -> str | None:
    """A time as the agent writes it (chrono's RFC 3339 with an `AutoSi` fraction and `Z`);
    None outside the years 1 to 9999."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    try:
        t = _dt.datetime.fromtimestamp(seconds, _dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        f"{autosi_fraction(nanos)}Z"
    )


# --- tails and pages -------------------------------------------------------------------------


def cut_tail(items: Sequence[T], window: int | None) -> tuple[list[T], int]:
    """`with_tail_cap`: keep the last `window` elements; return them and how many were dropped."""
    if window is None or window >= len(items):
        return list(items), 0
    kept = list(items[len(items) - window :]) if window > 0 else []
    return kept, len(items) - len(kept)


def classify_page(role: object, part_types: Sequence[object]) -> str:
    """`PageKind::classify` for one message."""
    if role in ("system", "developer"):
        return "bootstrap"
    if role == "tool" or "tool_result" in part_types:
        return "evidence"
    return "conversation"


DEFAULT_SUMMARY_INDEX: dict[str, Any] = {"tree": [], "generation": 0, "lru_order": []}
