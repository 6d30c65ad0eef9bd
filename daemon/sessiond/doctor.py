"""`sessiond doctor`: check the setup and say what to fix. Exit 0 only when all is well.

Each check prints `ok:`, `note:` (worth knowing, not wrong) or `problem:` (with the fix).
Nothing is changed, except one small object the S3 check writes to prove it may write.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field

from sessionctl.agent import env_sessions_dir, read_registry, registry_dir
from sessionctl.socket_path import IMPERSONATION_HINT

from sessiond.agentfiles import doctor_problems
from sessiond.config import ConfigError, Settings
from sessiond.logs import redact_urls
from sessiond.search.store import fts5_missing, index_path
from sessiond.server.listener import socket_is_live
from sessiond.store.doctor import database_lines

INOTIFY = "/proc/sys/fs/inotify"
INOTIFY_SPARE = 16  # left for the registry folder, workspaces asked about, and other programs


@dataclass
class Report:
    lines: list[tuple[str, str]] = field(default_factory=list)

    def ok(self, text: str) -> None:
        self.lines.append(("ok", text))

    def note(self, text: str) -> None:
        self.lines.append(("note", text))

    def problem(self, text: str) -> None:
        self.lines.append(("problem", text))

    @property
    def problems(self) -> int:
        return sum(1 for kind, _ in self.lines if kind == "problem")


def _check_private(report: Report, what: str, path: str, st: os.stat_result, mode: int) -> bool:
    good = True
    if st.st_uid != os.getuid():
        report.problem(f"{what} {path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()})")
        good = False
    actual = stat.S_IMODE(st.st_mode)
    if actual & ~mode & 0o777:
        report.problem(f"{what} {path} has mode {actual:o}; run: chmod {mode:o} {path}")
        good = False
    return good


def check_socket(report: Report, socket_path: str) -> None:
    folder = os.path.dirname(socket_path)
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        report.ok(f"socket folder {folder} does not exist yet; it is created 0700 at start")
        return
    if st.st_uid != os.getuid():  # nothing in it is ours: not even worth a connect
        report.problem(
            f"socket folder {folder} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}): "
            f"{IMPERSONATION_HINT}, so sessiond refuses to listen there and sessionctl to talk "
            "through it; have it removed (its owner or root can), or set XDG_RUNTIME_DIR or "
            "--socket to a folder of your own"
        )
        return
    if _check_private(report, "socket folder", folder, st, 0o700):
        report.ok(f"socket folder {folder}: yours, mode 700")
    try:
        st = os.lstat(socket_path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        report.problem(f"{socket_path} is not a socket; remove it, or choose --socket")
    elif socket_is_live(socket_path):
        _check_private(report, "socket", socket_path, st, 0o600)
        report.ok(f"socket {socket_path}: a sessiond answers on it")
    else:
        report.note(f"socket {socket_path} is stale (nothing answers); it is replaced at start")


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return None


def check_inotify(report: Report, folders: int) -> None:
    """sessiond's file watcher uses one inotify instance and one watch per watched folder."""
    need = folders + INOTIFY_SPARE
    for name, knob in (("instances", "max_user_instances"), ("watches", "max_user_watches")):
        limit = _read_int(f"{INOTIFY}/{knob}")
        if limit is None:
            report.problem(f"cannot read {INOTIFY}/{knob}: is this Linux with inotify?")
        elif limit < need:
            report.problem(
                f"inotify allows {limit} {name} per user, but {folders} folders are watched; "
                f"run: sudo sysctl fs.inotify.{knob}={max(need * 2, 1024)} (and add it to "
                "/etc/sysctl.d/ to keep it)"
            )
        else:
            report.ok(f"inotify {name}: limit {limit}, {folders} folders to watch")


def check_sessions_folder(report: Report, folder: str, writes: bool) -> None:
    if not os.path.isdir(folder):
        report.note(f"sessions folder {folder} does not exist; it is served once it does")
    elif not os.access(folder, os.R_OK | os.X_OK):
        report.problem(f"sessions folder {folder} is not readable; run: chmod u+rx {folder}")
    elif writes and not os.access(folder, os.W_OK):
        report.problem(
            f"sessions folder {folder} is not writable, so its .workspace_index.json and "
            f".listing_cache.json go stale; run: chmod u+w {folder}, or start with "
            "--no-workspace-index --no-listing-cache"
        )
    else:
        report.ok(f"sessions folder {folder}")


def check_polled(report: Report, socket_path: str) -> None:
    """Folders the running daemon polls because it cannot watch them (its `status`)."""
    from sessionctl import Client

    if not socket_is_live(socket_path):
        return
    try:
        with Client(socket=socket_path, timeout=5, connect_timeout=5) as client:
            status = client.status()
    except Exception as exc:  # any failure here is the daemon's to report, not ours
        report.note(f"could not ask the running sessiond which folders it polls ({exc})")
        return
    polled = [r["path"] for r in status.get("roots", []) if r.get("polled")]
    for folder in polled:
        report.problem(
            f"sessions folder {folder} cannot be watched, so sessiond polls it every second "
            "(changes show up to a second late): inotify watches are used up or the folder "
            "is unreadable; raise fs.inotify.max_user_watches or fix its permissions"
        )


def check_state_dir(report: Report, folder: str) -> None:
    if not os.path.exists(folder):
        parent = folder
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if os.access(parent, os.W_OK | os.X_OK):
            report.ok(f"state folder {folder} does not exist yet; it is created at start")
        else:
            report.problem(f"state folder {folder} cannot be created: {parent} is not writable")
        return
    if not os.path.isdir(folder):
        report.problem(f"state folder {folder} is not a folder; remove it or use --state-dir")
        return
    if not _check_private(report, "state folder", folder, os.stat(folder), 0o755):
        return
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as exc:
        report.problem(f"state folder {folder} is not writable ({exc.strerror}); fix its owner")
        return
    report.ok(f"state folder {folder}")


def check_search(report: Report, state_dir: str, env: Mapping[str, str]) -> None:
    missing = fts5_missing(env)
    if missing is not None:
        report.problem(
            f"search: {missing}; the `search` op answers `unavailable` until sessiond runs on a "
            "Python whose sqlite3 module has FTS5 (Debian's and python.org's builds do)"
        )
        return
    path = index_path(state_dir)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        report.ok(f"search: SQLite FTS5 available; the index {path} is built at start")
        return
    if _check_private(report, "search index", path, st, 0o600):
        report.ok(f"search: index {path} ({st.st_size / 1e6:.1f} MB)")


def check_sink(report: Report, env: Mapping[str, str], settings: Settings) -> None:
    try:
        from sessiond.sink.config import SinkConfig
        from sessiond.sink.uploader import HistorySink
    except ImportError:
        report.note("history sink (S3): not part of this build")
        return
    try:
        config = SinkConfig.from_env(env, settings.s3)
    except ValueError as exc:
        report.problem(f"history sink (S3): {redact_urls(str(exc))}")
        return
    if config is None:
        report.note("history sink (S3): off (CODETETHER_HISTORY_S3_* are not all set)")
        return
    try:
        problems = HistorySink(config, lambda _id: None, settings.state_dir).check()
    except Exception as exc:
        problems = [
            f"history sink (S3): the check failed: {type(exc).__name__}: {redact_urls(str(exc))}"
        ]
    for problem in problems:
        report.problem(redact_urls(problem))
    if not problems:
        report.ok(f"history sink (S3): {config.endpoint_display} bucket {config.bucket} writable")


def sessions_folders(settings: Settings, env: Mapping[str, str]) -> list[str]:
    folders = list(settings.sessions_dirs)
    if settings.discover:
        env_dir = env_sessions_dir(env)
        folders += [env_dir] if env_dir else []
        registry = registry_dir(env)
        folders += read_registry(registry) if registry else []
    return sorted(set(folders))


def config_problem(error: ConfigError) -> int:
    """A config file (or variable) doctor cannot read: the one problem it reports."""
    print(f"problem: {redact_urls(str(error))}")
    print("1 problem(s) found: fix them and run again")
    return 1


def doctor(settings: Settings, env: Mapping[str, str]) -> int:
    report = Report()
    if settings.config_path and os.path.exists(settings.config_path):
        report.ok(f"config file {settings.config_path}")
    check_socket(report, settings.socket)
    folders = sessions_folders(settings, env)
    registry = registry_dir(env) if settings.discover else None
    watched = sum(1 for f in folders if os.path.isdir(f))
    watched += 1 if registry and os.path.isdir(registry) else 0
    check_inotify(report, watched)
    writes = settings.maintain_workspace_index or settings.maintain_listing_cache
    for folder in folders:
        check_sessions_folder(report, folder, writes)
        for kind, text in database_lines(folder):
            report.lines.append((kind, text))
    check_polled(report, settings.socket)
    for problem in doctor_problems(
        folders,
        workspace_index=settings.maintain_workspace_index,
        listing_cache=settings.maintain_listing_cache,
    ):
        report.problem(problem)
    if not folders:
        report.note("no sessions folder found yet; they are picked up as the agent makes them")
    check_state_dir(report, settings.state_dir)
    check_search(report, settings.state_dir, env)
    check_sink(report, env, settings)
    for kind, text in report.lines:
        print(f"{kind}: {text}")
    count = report.problems
    print("all is well" if not count else f"{count} problem(s) found: fix them and run again")
    return 0 if not count else 1
