"""`sessiond doctor`: check the setup and say what to fix. Exit 0 only when all is well."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping

from sessionctl.agent import env_sessions_dir, read_registry, registry_dir

from sessiond.config import Settings


def _check_socket_folder(folder: str) -> list[str]:
    if not os.path.exists(folder):
        return []  # created 0700 at start
    st = os.stat(folder)
    problems = []
    if st.st_uid != os.getuid():
        problems.append(f"socket folder {folder} is owned by uid {st.st_uid}; use your own")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        problems.append(f"socket folder {folder} has mode {mode:o}; run: chmod 700 {folder}")
    return problems


def _check_inotify(folders: int) -> list[str]:
    try:
        with open("/proc/sys/fs/inotify/max_user_watches") as fh:
            limit = int(fh.read())
    except (OSError, ValueError):
        return ["cannot read /proc/sys/fs/inotify/max_user_watches"]
    if folders + 16 > limit:
        return [
            f"inotify allows {limit} watches but {folders} folders need watching; raise "
            "fs.inotify.max_user_watches with sysctl"
        ]
    return []


def _check_folder_readable(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return [f"sessions folder {folder} does not exist (it is served once it does)"]
    if not os.access(folder, os.R_OK | os.X_OK):
        return [f"sessions folder {folder} is not readable; fix its permissions"]
    return []


def _check_state_dir(folder: str) -> list[str]:
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as exc:
        return [f"state folder {folder} is not writable: {exc.strerror}"]
    return []


def _check_sink(env: Mapping[str, str], settings: Settings) -> tuple[list[str], str]:
    try:
        from sessiond.sink import HistorySink, SinkConfig
    except ImportError:
        return [], "S3 sink: not built in"
    config = SinkConfig.from_env(env, settings.s3)
    if config is None:
        return [], "S3 sink: off (CODETETHER_HISTORY_S3_* not set)"
    sink = HistorySink(config, lambda _id: None, settings.state_dir)
    return sink.check(), f"S3 sink: {config.endpoint} bucket {config.bucket}"


def doctor(settings: Settings, env: Mapping[str, str]) -> int:
    folders = list(settings.sessions_dirs)
    if settings.discover:
        env_dir = env_sessions_dir(env)
        folders += [env_dir] if env_dir else []
        registry = registry_dir(env)
        folders += read_registry(registry) if registry else []
    problems = _check_socket_folder(os.path.dirname(settings.socket))
    problems += _check_inotify(len(folders) + 1)
    for folder in sorted(set(folders)):
        problems += _check_folder_readable(folder)
    problems += _check_state_dir(settings.state_dir)
    sink_problems, sink_line = _check_sink(env, settings)
    problems += sink_problems
    print(f"socket: {settings.socket}")
    print(f"state folder: {settings.state_dir}")
    print(f"sessions folders: {len(set(folders))}")
    print(sink_line)
    for problem in problems:
        print(f"problem: {problem}")
    print("all is well" if not problems else f"{len(problems)} problem(s) found")
    return 0 if not problems else 1
