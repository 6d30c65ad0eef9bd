"""`sessiond start` / `stop` as a classic Unix daemon: the real CLI, the real detached daemon."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.daemon import wait_for
from tests.support.notify import short_tmp_dir


@dataclass
class Setup:
    base: str
    pidfile: str
    socket: str
    state: str
    sessions: str
    env: dict[str, str]

    def sessiond(self, *args: str, pidfile: bool = True) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "sessiond", *args]
        if pidfile:
            command += ["--pidfile", self.pidfile]
        if args[0] != "stop":
            command += ["--no-discover", "--sessions-dir", self.sessions]
        command += ["--socket", self.socket, "--state-dir", self.state]
        return subprocess.run(
            command,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=90,
            stdin=subprocess.DEVNULL,
        )

    def pid(self) -> int:
        with open(self.pidfile) as fh:
            return int(fh.read())


@pytest.fixture
def setup() -> Iterator[Setup]:
    base = short_tmp_dir()
    sessions = os.path.join(base, "sessions")
    os.makedirs(sessions)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": base,
        "XDG_CONFIG_HOME": os.path.join(base, "config"),
        "SESSIOND_LOG_FORMAT": "json",
    }
    state = os.path.join(base, "state")
    made = Setup(
        base, os.path.join(base, "sessiond.pid"), f"{base}/run/s.sock", state, sessions, env
    )
    yield made
    try:
        pid = made.pid()
    except (OSError, ValueError):
        pid = 0
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(base, ignore_errors=True)


def ping(path: str) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(path)
        client.sendall(b'{"op":"ping"}\n')
        return json.loads(client.makefile("rb").readline())


def ended(pid: int) -> bool:
    """Whether a process that is not our child (the daemon was reparented) has ended."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    wait_for(lambda: ended(pid), timeout, f"pid {pid} to end")


def test_start_detaches_a_proper_daemon_and_stop_ends_it(setup: Setup) -> None:
    started = setup.sessiond("start")
    assert started.returncode == 0, started.stderr
    assert "serving" in started.stdout
    pid = setup.pid()
    assert ping(setup.socket)["ok"]  # start returned once the daemon answers
    with open(f"/proc/{pid}/status") as fh:
        assert "Umask:\t0077" in fh.read()
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    log = os.path.join(setup.state, "sessiond.log")
    for fd in (1, 2):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == log
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    # Its own session, of which it is not the leader: it can never get a controlling terminal.
    assert os.getsid(pid) not in (os.getsid(0), pid)
    assert os.stat(log).st_mode & 0o777 == 0o600

    stopped = setup.sessiond("stop")
    assert stopped.returncode == 0, stopped.stderr
    wait_gone(pid)  # stop waited for it; this only confirms
    assert not os.path.exists(setup.pidfile)
    assert not os.path.exists(setup.socket)
    with open(log) as fh:
        events = [json.loads(line)["event"] for line in fh if line.startswith("{")]
    assert events[0] == "start" and "ready" in events and events[-1] == "stop"

    again = setup.sessiond("stop")
    assert again.returncode != 0 and "not running" in again.stderr


def test_a_second_daemon_on_a_live_socket_refuses(setup: Setup) -> None:
    assert setup.sessiond("start").returncode == 0
    pid = setup.pid()
    second = setup.sessiond("start")
    assert second.returncode != 0
    assert f"already running as pid {pid}" in second.stderr
    other_pidfile = setup.sessiond(
        "start", "--pidfile", os.path.join(setup.base, "2.pid"), pidfile=False
    )
    assert other_pidfile.returncode != 0
    assert f"another sessiond is already serving {setup.socket}" in other_pidfile.stderr
    foreground = setup.sessiond("run", pidfile=False)
    assert foreground.returncode != 0
    failed = [json.loads(line) for line in foreground.stderr.splitlines() if line.startswith("{")]
    assert failed[-1]["event"] == "start_failed"
    assert f"another sessiond is already serving {setup.socket}" in failed[-1]["error"]
    assert ping(setup.socket)["ok"]  # the first one still serves, untouched
    assert setup.pid() == pid
    assert setup.sessiond("stop").returncode == 0


def test_start_after_sigkill_clears_the_stale_pidfile_and_socket(setup: Setup) -> None:
    assert setup.sessiond("start").returncode == 0
    killed = setup.pid()
    os.kill(killed, signal.SIGKILL)
    wait_gone(killed)
    assert os.path.exists(setup.pidfile) and os.path.exists(setup.socket)  # both left behind

    restarted = setup.sessiond("start")
    assert restarted.returncode == 0, restarted.stderr
    assert f"removed the stale pidfile {setup.pidfile}" in restarted.stdout
    assert f"removed the stale socket {setup.socket}" in restarted.stdout
    assert setup.pid() != killed
    assert ping(setup.socket)["ok"]
    assert setup.sessiond("stop").returncode == 0


def test_start_reports_a_daemon_that_dies_before_serving(setup: Setup) -> None:
    os.makedirs(os.path.dirname(setup.socket), mode=0o700)
    with open(setup.socket, "w") as fh:
        fh.write("not a socket")
    failed = setup.sessiond("start")
    assert failed.returncode != 0
    assert "exited before serving" in failed.stderr
    assert "is not a socket" in failed.stderr  # the end of its log, shown
    assert not os.path.exists(setup.pidfile)
