"""sessiond under a real systemd user manager, with a real journald.

In a private mount namespace (so nothing of the machine's own /run is touched) the test starts
`systemd-journald` and `systemd --user`, installs the units with `sessiond install-service`,
runs the one command it prints, and checks what a user would see: the service active with its
STATUS, the socket owner-only, the events in the journal as fields, and a dead file watcher
ending in a restart by the watchdog. It shows the hardening options work in a user unit.
Skipped, with the reason, where a user manager cannot run (not root, no systemd, no unshare).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sessiond.systemd.journal import journal_available

from tests.support.agent_sim import compact, new_session
from tests.support.notify import short_tmp_dir

MANAGER = "/lib/systemd/systemd"
JOURNALD = "/lib/systemd/systemd-journald"
TOOLS = ("unshare", "nsenter", "systemctl", "journalctl")
SESSIOND = os.path.join(os.path.dirname(sys.executable), "sessiond")

BOOT = r"""
set -e
mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/systemd/system /run/systemd/journal /run/log
mount -t tmpfs tmpfs /run/log
if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi
# journald's own settings: leave the kernel's log alone (neither read nor written).
printf '[Journal]\nReadKMsg=no\nForwardToKMsg=no\n' > /run/systemd/journald.conf
mount --bind /run/systemd/journald.conf /etc/systemd/journald.conf
wait_socket() {  # a socket another process brings up, with a deadline
  for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done
  echo "no $1" >&2; exit 1
}
SYSTEMD_LOG_TARGET=console {journald} 2>/dev/null &
JOURNALD=$!
wait_socket /run/systemd/journal/stdout
SYSTEMD_LOG_TARGET=journal {manager} --user &
MANAGER=$!
# On SIGTERM: the manager stops its units and exits, then journald; both reaped here.
trap 'kill -TERM $MANAGER; wait $MANAGER; kill -TERM $JOURNALD; wait $JOURNALD; exit 0' TERM
wait_socket "$XDG_RUNTIME_DIR/systemd/private"
echo up
wait
"""


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "a private /run for the user manager needs root"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    missing += [p for p in (MANAGER, JOURNALD) if not os.access(p, os.X_OK)]
    if missing:
        return f"absent: {', '.join(missing)} (Debian package systemd, util-linux)"
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        return "unshare -m is not permitted here"
    if not journal_available():
        return "journal fields need systemd-python (the systemd extra)"
    return None


pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))


@dataclass
class UserManager:
    boot: subprocess.Popen[str]
    home: str
    env: dict[str, str]

    @property
    def socket(self) -> str:
        return f"{self.env['XDG_RUNTIME_DIR']}/sessiond/sessiond.sock"

    def run(self, *command: str, check: bool = True) -> str:
        """`command` inside the namespace, as the user manager's user."""
        result = subprocess.run(
            ["nsenter", "-t", str(self.boot.pid), "-m", "--", *command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check:
            assert result.returncode == 0, f"{command}: {result.stderr}"
        return result.stdout

    def show(self, *props: str) -> dict[str, str]:
        args = [f"-p{p}" for p in props]
        out = self.run("systemctl", "--user", "show", "sessiond.service", *args)
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *matches: str) -> list[dict[str, Any]]:
        out = self.run("journalctl", "--no-pager", "-o", "json", *matches, check=False)
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def eventually(what: str, probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll another process's state (the manager's, journald's) until `probe` is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


@pytest.fixture
def manager() -> Iterator[UserManager]:
    home = short_tmp_dir()
    runtime = f"{home}/runtime"
    os.makedirs(runtime, mode=0o700)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": home,
        "XDG_RUNTIME_DIR": runtime,
        "XDG_CONFIG_HOME": f"{home}/.config",
    }
    script = BOOT.replace("{journald}", JOURNALD).replace("{manager}", MANAGER)
    boot = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "bash", "-c", script],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert boot.stdout is not None
    if boot.stdout.readline().strip() != "up":
        boot.kill()
        boot.wait()
        pytest.skip("systemd --user would not start in a private namespace here")
    made = UserManager(boot, home, env)
    yield made
    made.run("systemctl", "--user", "stop", "sessiond.service", "sessiond.socket", check=False)
    main_pid = made.show("MainPID").get("MainPID", "0")
    boot.terminate()  # the manager stops its units and exits, then journald (BOOT's trap)
    try:
        boot.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(boot.pid, signal.SIGKILL)
        boot.wait()
    if main_pid not in ("", "0"):
        try:
            os.kill(int(main_pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(home, ignore_errors=True)


def request(path: str, op: str) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(20)
        client.connect(path)
        client.sendall(json.dumps({"op": op}).encode() + b"\n")
        return json.loads(client.makefile("rb").readline())


def test_installed_units_run_under_systemd_with_journal_and_watchdog(manager: UserManager) -> None:
    sessions = f"{manager.home}/sessions"
    os.makedirs(sessions)
    session = new_session("/work/project")
    with open(f"{sessions}/{session['id']}.json", "wb") as fh:
        fh.write(compact(session))
    config = f"{manager.home}/.config/sessiond"
    os.makedirs(config)
    with open(f"{config}/config.toml", "w") as fh:
        fh.write(f'sessions_dirs = ["{sessions}"]\ndiscover = false\n')

    installed = subprocess.run(
        [SESSIOND, "install-service"], env=manager.env, capture_output=True, text=True
    )
    assert installed.returncode == 0, installed.stderr
    # For the watchdog part: a short watchdog and the test-only fault, as a drop-in would.
    dropin = f"{manager.home}/.config/systemd/user/sessiond.service.d"
    os.makedirs(dropin)
    with open(f"{dropin}/test.conf", "w") as fh:
        fh.write("[Service]\nWatchdogSec=3s\nRestartSec=200ms\n")
        fh.write("Environment=SESSIOND_TEST_FAULTS=watcher_dies\n")
    # The optional EnvironmentFile: S3 settings, here for an endpoint where nothing listens.
    with open(f"{config}/env", "w") as fh:
        fh.write("CODETETHER_HISTORY_S3_ENDPOINT=https://127.0.0.1:1\n")
        fh.write("CODETETHER_HISTORY_S3_BUCKET=b\nCODETETHER_HISTORY_S3_ACCESS_KEY=a\n")
        fh.write("CODETETHER_HISTORY_S3_SECRET_KEY=s\n")
    manager.run("bash", "-c", installed.stdout.strip())  # the one command it printed

    assert request(manager.socket, "ping")["ok"]
    assert request(manager.socket, "status")["uploads"]["enabled"]  # the env file was read
    shown = manager.show("ActiveState", "StatusText", "MainPID", "NRestarts")
    assert shown["ActiveState"] == "active"
    assert shown["StatusText"] == "serving 1 sessions in 1 workspaces"
    folder = os.stat(os.path.dirname(manager.socket))
    assert stat.S_IMODE(folder.st_mode) == 0o700
    assert stat.S_IMODE(os.stat(manager.socket).st_mode) == 0o600

    [ready] = eventually("ready in the journal", lambda: manager.journal("EVENT=ready"))
    assert ready["SYSLOG_IDENTIFIER"] == "sessiond" and ready["PRIORITY"] == "6"
    assert (ready["SESSIONS"], ready["WORKSPACES"]) == ("1", "1")
    assert ready["MESSAGE"].startswith("ready: sessions=1 workspaces=1 duration_ms=")
    assert float(ready["DURATION_MS"]) >= 0
    assert ready["_PID"] == shown["MainPID"]

    first = shown["MainPID"]
    os.kill(int(first), signal.SIGUSR2)  # the watcher thread dies; the pings stop

    def restarted() -> bool:
        now = manager.show("NRestarts", "MainPID", "ActiveState", "StatusText")
        return (
            int(now["NRestarts"]) >= 1
            and now["MainPID"] not in (first, "0")
            and now["ActiveState"] == "active"
            and now["StatusText"] == "serving 1 sessions in 1 workspaces"
        )

    try:
        eventually("a restart by the watchdog", restarted, timeout=60)
    except AssertionError as exc:
        status = manager.run("systemctl", "--user", "status", "sessiond", "--no-pager", check=False)
        lines = [f"{e.get('_PID')} {e.get('MESSAGE')}" for e in manager.journal()][-40:]
        raise AssertionError(f"{exc}\n{status}\n" + "\n".join(lines)) from None
    said = [str(e.get("MESSAGE")) for e in manager.journal()]
    assert any("sessiond.service: Watchdog timeout" in m for m in said), said[-20:]
    unhealthy = manager.journal("EVENT=unhealthy")
    assert unhealthy and unhealthy[0]["PRIORITY"] == "2" and unhealthy[0]["_PID"] == first
    assert request(manager.socket, "ping")["ok"]  # the same socket, served by the new process

    manager.run("systemctl", "--user", "stop", "sessiond.service")
    assert manager.show("ActiveState", "Result") == {"ActiveState": "inactive", "Result": "success"}
    [stop] = eventually("stop in the journal", lambda: manager.journal("EVENT=stop"))
    assert stop["CODE"] == "0"
