"""sessiond under systemd's socket activation, with a NOTIFY_SOCKET of the test's own.

`systemd-socket-activate` listens, and starts `python -m sessiond run` only when the first
client connects, handing it the socket through LISTEN_FDS, as a `.socket` unit does. What
sessiond tells the service manager arrives on the test's datagram socket.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.support.agent_sim import compact, new_session
from tests.support.notify import NotifySocket, short_tmp_dir
from tests.support.paths import ROOT

SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")
pytestmark = pytest.mark.skipif(
    SOCKET_ACTIVATE is None, reason="systemd-socket-activate is absent (Debian package systemd)"
)
DOCS = ROOT / "docs" / "logging.md"


@dataclass
class Service:
    proc: subprocess.Popen[str]
    socket: str
    notify: NotifySocket
    sessions: str

    def connect(self) -> socket.socket:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(15)
        client.connect(self.socket)
        return client

    def stop(self) -> tuple[int, list[dict[str, object]]]:
        """SIGTERM, then the exit code and sessiond's JSON log lines."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, stderr = self.proc.communicate(timeout=30)
        events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        return self.proc.returncode, events


@pytest.fixture
def activated() -> Iterator[Callable[..., Service]]:
    base = short_tmp_dir()
    notify = NotifySocket(os.path.join(base, "notify"))
    started: list[Service] = []

    def start(*extra_env: str) -> Service:
        sessions = os.path.join(base, "sessions")
        os.makedirs(sessions, exist_ok=True)
        path = os.path.join(base, "run", "sessiond.sock")
        os.makedirs(os.path.dirname(path), mode=0o700)
        env_args = [
            f"NOTIFY_SOCKET={notify.path}",
            f"XDG_RUNTIME_DIR={base}/run",
            f"XDG_CONFIG_HOME={base}/config",
            f"XDG_STATE_HOME={base}/state",
            "SESSIOND_LOG_FORMAT=json",
            *extra_env,
        ]
        command = [str(SOCKET_ACTIVATE), "-l", path, "--fdname=sessiond"]
        for item in env_args:
            command += ["-E", item]
        command += [sys.executable, "-m", "sessiond", "run", "--no-discover"]
        command += ["--sessions-dir", sessions, "--socket", path]
        env = {"PATH": os.environ["PATH"], "HOME": base}
        proc = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        assert proc.stderr is not None
        line = proc.stderr.readline()  # systemd-socket-activate says when it listens
        assert line.startswith("Listening on"), line
        service = Service(proc, path, notify, sessions)
        started.append(service)
        return service

    yield start
    for service in started:
        if service.proc.poll() is None:
            service.proc.kill()
            service.proc.communicate()
    notify.close()
    shutil.rmtree(base, ignore_errors=True)


def write_session(folder: str, directory: str) -> str:
    session = new_session(directory, title="activation")
    with open(os.path.join(folder, f"{session['id']}.json"), "wb") as fh:
        fh.write(compact(session))
    return str(session["id"])


def documented_fields(event: str) -> list[str]:
    """The fields docs/logging.md lists for `event`: its table row `| `event` | level | `a`,
    `b` | ...`."""
    for line in DOCS.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0] == f"`{event}`":
            return [f.strip().strip("`") for f in cells[2].split(",") if f.strip().strip("`")]
    raise AssertionError(f"docs/logging.md has no row for {event}")


def test_a_request_sent_before_start_is_answered_and_the_manager_is_told(
    activated: Callable[..., Service],
) -> None:
    service = activated()
    session_id = write_session(service.sessions, "/w")
    client = service.connect()  # this connection is what makes systemd-socket-activate start it
    client.sendall(b'{"op":"ping","req":1}\n{"op":"list","req":2}\n')
    assert service.notify.messages == []  # the requests went out before sessiond was even up
    ready = service.notify.wait_key("READY")
    assert ready["READY"] == "1"
    assert ready["STATUS"] == "serving 1 sessions in 1 workspaces"
    replies = client.makefile("rb")
    ping, listing = json.loads(replies.readline()), json.loads(replies.readline())
    assert ping["ok"] and ping["req"] == 1
    assert listing["ok"] and listing["req"] == 2
    assert [s["id"] for s in listing["sessions"]] == [session_id]
    client.close()

    os.kill(service.proc.pid, signal.SIGHUP)  # reload: RELOADING=1 (with its clock), READY=1
    reloading = service.notify.wait_key("RELOADING", "1")
    assert int(reloading["MONOTONIC_USEC"]) > 0
    service.notify.wait_key("READY", "1")

    code, events = service.stop()
    assert service.notify.wait_key("STOPPING", "1")["STATUS"] == "stopping"
    assert code == 0
    assert not any("WATCHDOG" in m for m in service.notify.messages)  # none was asked for
    assert os.path.exists(service.socket)  # systemd's socket: not sessiond's to remove
    by_name = {e["event"]: e for e in events}
    for name in ("start", "ready", "stop"):
        missing = [f for f in documented_fields(name) if f not in by_name[name]]
        assert not missing, f"{name} lacks {missing}: {by_name[name]}"
        assert by_name[name]["level"] == "info" and isinstance(by_name[name]["ts"], float)
    assert by_name["start"]["pid"] == service.proc.pid
    assert by_name["ready"]["sessions"] == 1
    assert by_name["stop"]["code"] == 0


def test_watchdog_pings_while_healthy_and_stop_when_the_watcher_dies(
    activated: Callable[..., Service],
) -> None:
    service = activated("WATCHDOG_USEC=400000", "SESSIOND_TEST_FAULTS=watcher_dies")
    service.connect().close()  # start it
    service.notify.wait_key("READY", "1")
    for _ in range(3):  # every 0.2 s, half of WATCHDOG_USEC
        service.notify.wait_key("WATCHDOG", "1", timeout=5)
    service.proc.send_signal(signal.SIGUSR2)  # the test-only fault: the watcher thread ends
    dead = service.notify.wait_for(lambda m: m.get("STATUS", "").startswith("unhealthy"))
    assert "WATCHDOG" not in dead
    later = service.notify.collect(1.2)  # three whole watchdog periods
    assert not [m for m in later if "WATCHDOG" in m]
    assert service.proc.poll() is None  # the service manager's watchdog does the restart
    code, events = service.stop()
    assert code == 0
    unhealthy = [e for e in events if e["event"] == "unhealthy"]
    assert unhealthy and unhealthy[0]["level"] == "critical"


def test_without_a_watchdog_a_dead_watcher_makes_sessiond_exit_1(
    activated: Callable[..., Service],
) -> None:
    service = activated("SESSIOND_TEST_FAULTS=watcher_dies")
    service.connect().close()
    service.notify.wait_key("READY", "1")
    service.proc.send_signal(signal.SIGUSR2)
    service.notify.wait_for(lambda m: m.get("STATUS", "").startswith("unhealthy"))
    service.notify.wait_key("STOPPING", "1")
    code, events = service.stop()
    assert code == 1  # Restart=on-failure restarts it; a stale index is never served
    assert [e["code"] for e in events if e["event"] == "stop"] == [1]
