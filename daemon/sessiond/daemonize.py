"""`sessiond start` / `stop`: a classic Unix daemon through python-daemon, with a locked pidfile.

`start` forks: the child becomes the daemon (detached, umask 077, working directory `/`,
stdout and stderr appended to `<state>/sessiond.log`), the parent returns once the socket
answers a ping, or fails with the log's last lines once the daemon has died.

The pidfile is held under an exclusive `flock` for the daemon's whole life, so "is it
running?" never trusts a pid that may have been reused: a pidfile nobody holds was left by a
killed daemon and is removed, and so is a socket file that no longer answers. A socket that
does answer means another sessiond serves it, and `start` refuses.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable, Mapping
from types import TracebackType

from sessiond.config import Settings
from sessiond.server.listener import socket_is_live

START_TIMEOUT_S = 60.0
POLL_S = 0.05  # polling a socket another process brings up, or a process we cannot wait on
LOG_NAME = "sessiond.log"


class AlreadyRunning(Exception):
    pass


class LockedPidfile:
    """The pidfile as python-daemon's `DaemonContext(pidfile=...)` wants it: entered in the
    daemon once detached, it locks the file and writes the daemon's pid; the lock goes with the
    process, however it ends."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> LockedPidfile:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise AlreadyRunning(f"{self.path} is locked by a running sessiond") from None
            try:
                if os.path.samestat(os.stat(self.path), os.fstat(fd)):
                    break  # locked, and still the file at that path
            except FileNotFoundError:
                pass
            os.close(fd)  # unlinked by a `start` clearing it as stale in between: again
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None = None,
        value: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        if self._fd is None:
            return
        try:
            if os.path.samestat(os.stat(self.path), os.fstat(self._fd)):
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None


def pidfile_holder(path: str) -> int | None:
    """The pid of the live daemon holding `path` locked, or None when nobody holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 64).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def default_pidfile(settings: Settings) -> str:
    return os.path.join(settings.state_dir, "sessiond.pid")


def _say(message: str, err: bool = False) -> None:
    print(f"sessiond: {message}", file=sys.stderr if err else sys.stdout, flush=True)


def _clear_stale(pidfile: str, socket_path: str) -> None:
    if os.path.lexists(pidfile):
        os.unlink(pidfile)
        _say(f"removed the stale pidfile {pidfile} (its daemon is gone)")
    try:
        st = os.lstat(socket_path)
    except OSError:
        return
    if stat.S_ISSOCK(st.st_mode) and st.st_uid == os.getuid() and _refused(socket_path):
        os.unlink(socket_path)
        _say(f"removed the stale socket {socket_path} (nothing listens on it)")


def _refused(path: str) -> bool:
    """True only when nothing listens at `path` (a busy daemon may merely be slow to accept)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
    return False


def start(
    settings: Settings, env: Mapping[str, str], pidfile: str | None, run: Callable[[], int]
) -> int:
    import daemon

    pidfile = os.path.abspath(pidfile or default_pidfile(settings))
    holder = pidfile_holder(pidfile)
    if holder is not None:
        _say(f"already running as pid {holder} (pidfile {pidfile}); stop it first", err=True)
        return 1
    if socket_is_live(settings.socket):
        _say(
            f"another sessiond is already serving {settings.socket}; stop it first "
            "(sessiond stop, or systemctl --user stop sessiond.socket sessiond.service)",
            err=True,
        )
        return 1
    _clear_stale(pidfile, settings.socket)
    os.makedirs(settings.state_dir, mode=0o700, exist_ok=True)
    os.makedirs(os.path.dirname(pidfile), mode=0o700, exist_ok=True)
    log_path = os.path.join(settings.state_dir, LOG_NAME)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    alive_r, alive_w = os.pipe()  # EOF on alive_r: the daemon (the last holder) has exited
    child = os.fork()
    if child == 0:
        os.close(alive_r)
        log = os.fdopen(log_fd, "a", buffering=1)
        # mypy resolves `daemon` to this repository's daemon/ folder, not python-daemon.
        context = daemon.DaemonContext(  # type: ignore[attr-defined]
            pidfile=LockedPidfile(pidfile),
            umask=0o077,
            working_directory="/",
            detach_process=True,
            stdout=log,
            stderr=log,
            files_preserve=[alive_w],
            signal_map={signal.SIGTSTP: None, signal.SIGTTIN: None, signal.SIGTTOU: None},
        )
        code = 1
        try:
            with context:
                code = run()
        except BaseException as exc:  # the pidfile lock, most likely: say so in the log
            print(f"sessiond: could not start: {exc}", file=log, flush=True)
        os._exit(code)
    os.close(alive_w)
    os.close(log_fd)
    try:
        code = _wait_until_serving(settings.socket, alive_r, log_path)
    finally:
        os.close(alive_r)
        os.waitpid(child, 0)  # the intermediate process, which exits as the daemon detaches
    if code == 0:
        _say(f"started pid {pidfile_holder(pidfile)}, serving {settings.socket}; log {log_path}")
    return code


def _wait_until_serving(socket_path: str, alive_r: int, log_path: str) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _answers_ping(socket_path, alive_r, deadline):
            return 0
        readable, _, _ = select.select([alive_r], [], [], POLL_S)
        if readable and not os.read(alive_r, 1):
            _say(f"the daemon exited before serving; the end of {log_path}:", err=True)
            print(_tail(log_path), file=sys.stderr)
            return 1
    _say(f"no answer on {socket_path} after {START_TIMEOUT_S:.0f}s; see {log_path}", err=True)
    return 1


def _answers_ping(path: str, alive_r: int, deadline: float) -> bool:
    """Connect and ping; the daemon answers once its index is built. False if it cannot
    connect yet, or the daemon dies while we wait."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
            sock.sendall(b'{"op":"ping"}\n')
        except OSError:
            return False
        reply = b""
        while b"\n" not in reply and time.monotonic() < deadline:
            watched: list[socket.socket | int] = [sock, alive_r]
            readable, _, _ = select.select(watched, [], [], deadline - time.monotonic())
            if alive_r in readable:
                return False
            if sock in readable:
                chunk = sock.recv(65536)
                if not chunk:
                    return False
                reply += chunk
    try:
        return bool(json.loads(reply.split(b"\n", 1)[0]).get("ok"))
    except ValueError:
        return False


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - 16384))
            data = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie no one has reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def stop(settings: Settings, pidfile: str | None, timeout: float) -> int:
    pidfile = os.path.abspath(pidfile or default_pidfile(settings))
    pid = pidfile_holder(pidfile)
    if pid is None:
        if os.path.lexists(pidfile):
            os.unlink(pidfile)
            _say(f"not running; removed the stale pidfile {pidfile}", err=True)
        else:
            _say(f"not running (no pidfile {pidfile})", err=True)
        return 1
    if pid <= 0:
        _say(f"{pidfile} is locked but holds no pid; stop that process by hand", err=True)
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError as exc:
        _say(f"cannot signal pid {pid}: {exc.strerror}", err=True)
        return 1
    deadline = time.monotonic() + timeout
    while pidfile_holder(pidfile) is not None or not _gone(pid):
        if time.monotonic() > deadline:
            _say(f"pid {pid} still running after {timeout:.0f}s; kill -KILL {pid}", err=True)
            return 1
        time.sleep(POLL_S)  # another process's exit: nothing of ours to wait on
    _say(f"stopped pid {pid}")
    return 0
