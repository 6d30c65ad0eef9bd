"""`sessiond start` / `stop`: a classic Unix daemon through python-daemon, with a locked pidfile.

`start` forks: the child becomes the daemon (detached, umask 077, working directory `/`,
stderr appended to the state folder's log), the parent returns once the socket answers.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping

from sessiond.config import Settings
from sessiond.server.listener import socket_is_live

START_TIMEOUT_S = 30.0


def default_pidfile(settings: Settings) -> str:
    return os.path.join(settings.state_dir, "sessiond.pid")


def _read_pid(pidfile: str) -> int | None:
    try:
        with open(pidfile) as fh:
            return int(fh.read().strip() or "0") or None
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def start(
    settings: Settings, env: Mapping[str, str], pidfile: str | None, run: Callable[[], int]
) -> int:
    from daemon.pidfile import TimeoutPIDLockFile

    import daemon

    pidfile = os.path.abspath(pidfile or default_pidfile(settings))
    if socket_is_live(settings.socket):
        print(f"sessiond: another sessiond is already serving {settings.socket}", file=sys.stderr)
        return 1
    pid = _read_pid(pidfile)
    if pid is not None and _alive(pid):
        print(f"sessiond: already running as pid {pid} ({pidfile})", file=sys.stderr)
        return 1
    if os.path.exists(pidfile):
        os.unlink(pidfile)  # left by a daemon that was killed
    os.makedirs(settings.state_dir, mode=0o700, exist_ok=True)
    os.makedirs(os.path.dirname(pidfile), mode=0o700, exist_ok=True)
    child = os.fork()
    if child == 0:
        log = open(os.path.join(settings.state_dir, "sessiond.log"), "a", buffering=1)  # noqa: SIM115
        context = daemon.DaemonContext(
            pidfile=TimeoutPIDLockFile(pidfile, acquire_timeout=0),
            umask=0o077,
            working_directory="/",
            stdout=log,
            stderr=log,
        )
        try:
            with context:
                code = run()
        except Exception as exc:  # the pidfile lock, most likely: say so in the log
            print(f"sessiond: could not start: {exc}", file=log)
            code = 1
        os._exit(code)
    return _wait_until_serving(settings.socket, child)


def _wait_until_serving(socket_path: str, child: int) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if socket_is_live(socket_path):
            print(f"sessiond: serving {socket_path}")
            return 0
        done, status = os.waitpid(child, os.WNOHANG)
        if done and os.waitstatus_to_exitcode(status) != 0:
            print("sessiond: the daemon failed to start; see its log", file=sys.stderr)
            return 1
        time.sleep(0.05)  # polling a socket another process is bringing up
    print(f"sessiond: no answer on {socket_path} after {START_TIMEOUT_S:.0f}s", file=sys.stderr)
    return 1


def stop(settings: Settings, pidfile: str | None, timeout: float) -> int:
    pidfile = os.path.abspath(pidfile or default_pidfile(settings))
    pid = _read_pid(pidfile)
    if pid is None or not _alive(pid):
        print(f"sessiond: not running ({pidfile})", file=sys.stderr)
        if pid is not None:
            os.unlink(pidfile)
        return 1
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            print(f"sessiond: pid {pid} still running after {timeout:.0f}s", file=sys.stderr)
            return 1
        time.sleep(0.05)  # waiting on another process's exit; no handle to wait on
    print(f"sessiond: stopped pid {pid}")
    return 0
