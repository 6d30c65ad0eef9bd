"""The client's fallback: answer resume/get/list by reading the sessions folders directly.

This is the agent's own cold scan (`scan_sync` in the agent's persistence.rs, described in
docs/protocol.md §11), run over the folders the agent would use when started in the workspace
asked about. It gives the daemon's answers, with `"source": "scan"`, and keeps the agent's one
blind spot: a session whose `metadata.directory` is another spelling (a symlink) of the
workspace fails the byte prefilter when there are two candidates or more. Standard library only.
"""

from __future__ import annotations

import json
import mmap
import os
import stat
from collections.abc import Generator, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sessionctl import agent
from sessionctl.document import (
    InvalidSession,
    header_of,
    keyed_object,
    validate_document,
    windowed_session,
)
from sessionctl.regular import open_regular, read_regular

if TYPE_CHECKING:
    from sessionctl.store_scan import StoredLoaded


def _store_scan() -> Any:
    """The database side (sqlite3, hashlib), imported only when a scan runs: the client's
    start-up does not pay for it."""
    from sessionctl import store_scan

    return store_scan


MAX_PREFILTER_BYTES = 64 << 20
"""The agent's mmap cap: a bigger file never passes the prefilter (docs/agent-files.md,
"Size limits")."""

MAX_PREFILTER_THREADS = 8


class ScanError(Exception):
    """A fallback scan that has no answer."""


class NotFound(ScanError, LookupError):
    """No session answers the question (the daemon's `not_found`)."""


class UsageError(ScanError, ValueError):
    """The question itself is malformed (the daemon's `bad_request`)."""


@dataclass(frozen=True)
class Candidate:
    """A session file as stat'ed once at the start of a scan."""

    path: str
    name: str
    mtime_ns: int

    @property
    def order_key(self) -> tuple[int, str, str]:
        # The agent sorts by mtime only; equal mtimes are broken by the greater name, then path.
        return (self.mtime_ns, self.name, self.path)


@dataclass(frozen=True)
class Loaded:
    """A validated session document and the stat taken before it was read."""

    doc: dict[str, Any]
    path: str
    file_bytes: int
    mtime_ns: int


# --- folders ---------------------------------------------------------------------------------


def sessions_dirs(workspace: str | None, env: Mapping[str, str]) -> list[str]:
    """The sessions folders the agent would use when started in `workspace`
    (docs/protocol.md §11, step 1), canonical, deduplicated, existing ones only."""
    wanted: list[str | None] = [agent.env_sessions_dir(env)]
    registry = agent.registry_dir(env)
    if registry:
        wanted.extend(agent.read_registry(registry))
    if workspace is not None:
        # The agent's cwd is a physical path, so it walks the resolved workspace's ancestors.
        wanted.append(agent.workspace_sessions_dir(agent.canonicalize(workspace), env))
    seen: list[str] = []
    for folder in wanted:
        if not folder:
            continue
        real = os.path.realpath(folder)
        if real not in seen and os.path.isdir(real):
            seen.append(real)
    return seen


def _stat_regular(path: str) -> os.stat_result | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def list_candidates(folders: Iterable[str]) -> list[Candidate]:
    """Every session file in `folders`, stat'ed once, newest first."""
    found: list[Candidate] = []
    for folder in folders:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if not agent.is_session_file_name(name):
                continue
            path = os.path.join(folder, name)
            if not agent.is_utf8_name(path):
                continue  # no answer could carry its name (sessiond skips it too)
            st = _stat_regular(path)
            if st is not None:
                found.append(Candidate(path, name, st.st_mtime_ns))
    found.sort(key=lambda c: c.order_key, reverse=True)
    return found


# --- reading one file ------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    # serde_json (and the daemon's msgspec) refuse NaN/Infinity; so must we.
    raise ValueError(f"not JSON: {name}")


def load_session(path: str) -> Loaded | None:
    """Stat, read, parse and validate one file; None when it is no session the agent could load."""
    st = _stat_regular(path)
    if st is None:
        return None
    try:
        text = read_regular(path, agent.MAX_SESSION_FILE_BYTES)[1].decode("utf-8")
        doc = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=keyed_object)
        validate_document(doc)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, InvalidSession):
        return None
    return Loaded(doc, path, st.st_size, st.st_mtime_ns)


def file_contains(path: str, needle: bytes) -> bool:
    """The agent's `file_contains_finder`: mmap the file and look for the bytes."""
    if not needle:
        return True
    try:
        with open_regular(path) as (fd, st):
            if st.st_size < len(needle) or st.st_size > MAX_PREFILTER_BYTES:
                return False
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as view:
                return view.find(needle) >= 0
    except (OSError, ValueError):
        return False


def _thread_count() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 4
    return max(1, min(cpus, MAX_PREFILTER_THREADS))


def _prefiltered(candidates: list[Candidate], needle: bytes) -> Generator[Candidate, None, None]:
    """The candidates whose bytes hold `needle`, in order, tested in parallel.

    The agent tests every file before looking at any; stopping at the first accepted one (the
    generator is closed, pending tests are cancelled) gives the same winner sooner.
    """
    pool = ThreadPoolExecutor(max_workers=_thread_count(), thread_name_prefix="sessionctl-scan")
    try:
        futures = [pool.submit(file_contains, c.path, needle) for c in candidates]
        for candidate, future in zip(candidates, futures, strict=True):
            if future.result():
                yield candidate
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def directory_matches(directory: object, canonical_ws: str) -> bool:
    """`dir == ws || canonicalize(dir) == ws`, as `scan_sync` compares them."""
    if not isinstance(directory, str):
        return False
    return (
        agent.normalize_components(directory) == canonical_ws
        or agent.canonicalize(directory) == canonical_ws
    )


# --- answers ---------------------------------------------------------------------------------


def _check_window(window: object) -> int | None:
    if window is None:
        return None
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise UsageError("'window' must be an integer >= 0")
    return window


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"'{name}' must be an integer >= 0")
    return value


def _check_workspace(workspace: object) -> str:
    if not isinstance(workspace, str) or not os.path.isabs(workspace) or "\x00" in workspace:
        raise UsageError("'workspace' must be an absolute path")
    return workspace


def session_response(loaded: Loaded | StoredLoaded, window: int | None) -> dict[str, Any]:
    """The body of a resume/get answer (docs/protocol.md §5.2, §5.3)."""
    if not isinstance(loaded, Loaded):  # a database session (sessionctl.store_scan)
        try:
            return loaded.response(window)
        except LookupError as exc:
            raise NotFound(str(exc)) from None
    body: dict[str, Any] = {
        "ok": True,
        "source": "scan",
        "session_id": loaded.doc["id"],
        "path": loaded.path,
        "header": header_of(loaded.doc, loaded.path, loaded.file_bytes, loaded.mtime_ns),
    }
    if window is not None:
        session, dropped = windowed_session(loaded.doc, window)
        body.update(session=session, dropped=dropped, file_bytes=loaded.file_bytes)
    return body


def _with_databases(
    folders: list[str],
) -> tuple[list[StoredLoaded], list[Candidate]]:
    """The database sessions of `folders`, and the session files a row does not shadow (the
    row wins over `<id>.json` in its folder: docs/storage.md)."""
    store_scan = _store_scan()
    rows = [s for folder in folders for s in store_scan.database_sessions(folder)]
    held = {s.path for s in rows}
    return rows, [c for c in list_candidates(folders) if c.path not in held]


def find_latest(workspace: str, env: Mapping[str, str]) -> Loaded | StoredLoaded | None:
    """`scan_sync`: the newest session file whose directory is the workspace. Where one of its
    sessions is in a folder with the agent's database, the newest `updated_at` of rows and
    files instead (ties: the row, then the greater id)."""
    canonical_ws = agent.canonicalize(workspace)
    folders = sessions_dirs(workspace, env)
    store_scan = _store_scan()
    if any(store_scan.has_database(f) for f in folders):
        rows, files = _with_databases(folders)
        pool: list[Loaded | StoredLoaded] = [
            r for r in rows if directory_matches(r.directory, canonical_ws)
        ]
        for candidate in files:
            loaded = load_session(candidate.path)
            if loaded is not None and directory_matches(
                loaded.doc["metadata"].get("directory"), canonical_ws
            ):
                pool.append(loaded)
        # The file rule stays for a workspace whose sessions are all in folders without one.
        if any(store_scan.has_database(os.path.dirname(s.path)) for s in pool):
            return max(pool, key=store_scan.answer_order)
    candidates = list_candidates(folders)
    if len(candidates) < 2:
        return _first_match(candidates, canonical_ws)
    needle = agent.json_escaped(canonical_ws).encode("utf-8")
    with closing(_prefiltered(candidates, needle)) as passed:
        return _first_match(passed, canonical_ws)


def _first_match(candidates: Iterable[Candidate], canonical_ws: str) -> Loaded | None:
    for candidate in candidates:
        loaded = load_session(candidate.path)
        if loaded is not None and directory_matches(
            loaded.doc["metadata"].get("directory"), canonical_ws
        ):
            return loaded
    return None


def scan_resume(
    workspace: str, window: int | None = None, env: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """The `resume` answer for `workspace`, found the agent's way."""
    workspace = _check_workspace(workspace)
    window = _check_window(window)
    loaded = find_latest(workspace, env)
    if loaded is None:
        raise NotFound(f"no session for workspace {workspace}")
    return session_response(loaded, window)


def _pointer_target(registry: str | None, session_id: str) -> str | None:
    """The file a registry pointer names, when it is an absolute existing `<id>.json`."""
    if not registry:
        return None
    content = agent.read_pointer(os.path.join(registry, session_id + agent.POINTER_SUFFIX))
    if content is None:
        return None
    target = content.decode("utf-8", "replace").strip()
    if not os.path.isabs(target) or os.path.basename(target) != f"{session_id}.json":
        return None
    folder = os.path.realpath(os.path.dirname(target))
    return os.path.join(folder, os.path.basename(target))


def scan_get(
    session_id: str,
    window: int | None = None,
    workspace: str | None = None,
    env: Mapping[str, str] = os.environ,
) -> dict[str, Any]:
    """The `get` answer for one id; `workspace` (default: the current directory) names the
    agent's local sessions folder."""
    if not agent.is_valid_session_id(session_id):
        raise UsageError("'id' must be 1-128 bytes of letters, digits, '-' or '_'")
    window = _check_window(window)
    if workspace is None:
        workspace = os.getcwd()
    folders = sessions_dirs(_check_workspace(workspace), env)
    paths = [os.path.join(folder, f"{session_id}.json") for folder in folders]
    pointed = _pointer_target(agent.registry_dir(env), session_id)
    if pointed is not None and pointed not in paths:
        paths.append(pointed)
    found: list[tuple[tuple[int, str], Loaded | StoredLoaded]] = []
    store_scan = _store_scan()
    for path in paths:
        folder = os.path.dirname(path)
        rows = [r for r in store_scan.database_sessions(folder) if r.session_id == session_id]
        if rows:  # the row wins over the file beside it
            found.append(((rows[0].updated_ns, rows[0].path), rows[0]))
            continue
        loaded = load_session(path)
        if loaded is not None and loaded.doc["id"] == session_id:
            found.append(((loaded.mtime_ns, loaded.path), loaded))
    if not found:
        raise NotFound(f"no session {session_id}")
    newest = max(found, key=lambda pair: pair[0])[1]
    return session_response(newest, window)


def _list_key(loaded: Loaded) -> tuple[int, int, str]:
    # validate_document guarantees updated_at parses.
    return (agent.parse_rfc3339_ns(loaded.doc["updated_at"]) or 0, loaded.mtime_ns, loaded.path)


def scan_list(
    workspace: str | None = None,
    limit: int = 100,
    offset: int = 0,
    env: Mapping[str, str] = os.environ,
) -> dict[str, Any]:
    """The `list` answer: every session (of `workspace`, when given), newest `updated_at` first."""
    limit = _check_count("limit", limit)
    offset = _check_count("offset", offset)
    canonical_ws = None if workspace is None else agent.canonicalize(_check_workspace(workspace))
    sessions: list[Loaded] = []
    rows, files = _with_databases(sessions_dirs(workspace, env))
    stored = [
        r for r in rows if canonical_ws is None or directory_matches(r.directory, canonical_ws)
    ]
    for candidate in files:
        loaded = load_session(candidate.path)
        if loaded is None:
            continue
        if canonical_ws is not None and not directory_matches(
            loaded.doc["metadata"].get("directory"), canonical_ws
        ):
            continue
        sessions.append(loaded)
    keyed: list[tuple[tuple[int, int, str], dict[str, Any]]] = [
        (_list_key(s), header_of(s.doc, s.path, s.file_bytes, s.mtime_ns)) for s in sessions
    ]
    keyed.extend(((r.updated_ns, r.updated_ns, r.path), r.header_fields()) for r in stored)
    keyed.sort(key=lambda pair: pair[0], reverse=True)
    headers = [h for _, h in keyed[offset : offset + limit]]
    return {"ok": True, "source": "scan", "sessions": headers, "total": len(keyed)}
