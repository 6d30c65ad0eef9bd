"""A spoofed daemon: another local user answers on the socket `sessionctl` would use. The
client refuses a socket whose folder is not the user's own and private, and a listener that
runs as another uid (SO_PEERCRED), sends it nothing, and says why; `resume`/`get`/`list` then
answer from the sessions folders as when the daemon is down, `--no-fallback` exits 3.

The attacker is a forked child that drops to `nobody` (root only): it creates the folder and a
listening socket, answers every line with a made-up session, and reports what it received.
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
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from sessionctl import Client, DaemonUnreachable
from sessionctl.client import DaemonUntrusted

from tests.support.daemon import private_env
from tests.support.robust import Agent

NOBODY = 65534
FAKE = json.dumps({"ok": True, "source": "daemon", "session_id": "spoofed"}).encode() + b"\n"

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="a second uid needs root")


def drop_to_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


@dataclass
class Attacker:
    """A forked listener; `received()` stops it and returns the bytes each connection sent."""

    pid: int
    report: int  # read end of the child's pipe
    ready: bool

    def received(self) -> list[bytes]:
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        with os.fdopen(self.report, "rb") as fh:
            lines = fh.read().splitlines()
        return [bytes.fromhex(line.decode()[5:]) for line in lines if line.startswith(b"CONN ")]


def start_attacker(
    path: str, before_listen: Callable[[], None], make_folder: bool, link_to: str | None = None
) -> Attacker:
    """Fork a child that (as arranged by `before_listen`) binds `path`, listens and answers.
    With `link_to`, the folder it makes is there, and the socket's folder a symlink to it."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: plain system calls only, then _exit
        try:
            os.close(read_end)
            if make_folder:  # the folder is the attacker's: made after dropping to nobody
                before_listen()
                if link_to is None:
                    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                else:
                    os.makedirs(link_to, mode=0o755, exist_ok=True)
                    os.symlink(link_to, os.path.dirname(path))
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(path)
            os.chmod(path, 0o777)
            if not make_folder:  # bound as root, listening as nobody
                before_listen()
            listener.listen(8)
            os.write(write_end, b"READY\n")
            while True:
                conn, _ = listener.accept()
                conn.settimeout(2)
                data = b""
                try:
                    data = conn.recv(65536)
                    if data:
                        conn.sendall(FAKE)
                except OSError:
                    pass
                os.write(write_end, b"CONN " + data.hex().encode() + b"\n")
                conn.close()
        except BaseException as exc:
            os.write(write_end, f"ERROR {exc!r}\n".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    first = b""
    while not first.endswith(b"\n"):
        chunk = os.read(read_end, 1)
        if not chunk:
            break
        first += chunk
    assert first == b"READY\n", first
    return Attacker(pid, read_end, True)


@pytest.fixture
def agent(base: str) -> Agent:
    os.chmod(base, 0o755)  # nobody must reach the folders made in it for the attacker
    agent = Agent(base, os.path.join(base, "ws"))
    agent.save(agent.new(agent.add_workspace("alpha"), 2))
    return agent


@pytest.fixture
def env(base: str, agent: Agent) -> dict[str, str]:
    """The victim's environment, without XDG_RUNTIME_DIR: the socket defaults to /tmp."""
    env = private_env(base, "/nonexistent-runtime")
    del env["XDG_RUNTIME_DIR"]
    return env


def sessionctl(env: dict[str, str], cwd: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sessionctl", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def default_folder() -> Iterator[str]:
    """/tmp/sessiond-<uid>/, which the attacker creates first; never one already there."""
    folder = f"/tmp/sessiond-{os.getuid()}"
    if os.path.lexists(folder):
        pytest.skip(f"{folder} exists: it may be in use, so this test does not take it over")
    yield folder
    if os.path.islink(folder):
        os.unlink(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("planted", ["folder", "symlink"])
def test_a_folder_made_first_by_another_user_is_refused(
    agent: Agent, env: dict[str, str], default_folder: str, planted: str
) -> None:
    path = os.path.join(default_folder, "sessiond.sock")
    # The symlink's target: a folder of the attacker's own in /tmp, made by the attacker.
    link_to = f"{default_folder}-target-{os.getpid()}" if planted == "symlink" else None
    attacker = start_attacker(path, drop_to_nobody, make_folder=True, link_to=link_to)
    workspace = agent.workspaces[0]
    try:
        assert os.stat(default_folder).st_uid == NOBODY
        assert os.path.islink(default_folder) == (planted == "symlink")
        refused = sessionctl(env, agent.base, "resume", "--workspace", workspace, "--no-fallback")
        status = sessionctl(env, agent.base, "status")
        fallback = sessionctl(env, agent.base, "resume", "--workspace", workspace, "--json")
    finally:
        received = attacker.received()
        if link_to is not None:
            shutil.rmtree(link_to, ignore_errors=True)
    why = f"refusing {path}: its folder {default_folder} belongs to uid {NOBODY}, not to you"
    assert refused.returncode == 3 and why in refused.stderr
    assert "another user may be impersonating sessiond" in refused.stderr
    assert refused.stdout == ""
    assert status.returncode == 3 and why in status.stderr
    # With the fallback: the user's own sessions, read from their folders, and a warning.
    assert fallback.returncode == 0, fallback.stderr
    answer = json.loads(fallback.stdout)
    assert answer["source"] == "scan"
    assert answer["session_id"] == next(iter(agent.docs))
    assert why in fallback.stderr
    assert received == []  # the client never even connected


def test_a_folder_others_may_write_in_is_refused(agent: Agent, base: str) -> None:
    folder = tempfile.mkdtemp(prefix="sdt-open-", dir="/tmp")  # short: AF_UNIX paths
    try:
        os.chmod(folder, 0o777)  # the user's, but open: anyone could have put a socket here
        path = os.path.join(folder, "s.sock")
        attacker = start_attacker(path, drop_to_nobody, make_folder=False)
        try:
            with pytest.raises(DaemonUntrusted, match="is writable by others \\(mode 777\\)"):
                Client(socket=path).ping()
        finally:
            received = attacker.received()
        assert received == []
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_listener_of_another_uid_in_a_private_folder_is_refused(
    agent: Agent, env: dict[str, str]
) -> None:
    folder = tempfile.mkdtemp(prefix="sdt-peer-", dir="/tmp")  # root's, 0700: the folder is fine
    try:
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        path = os.path.join(folder, "s.sock")
        attacker = start_attacker(path, drop_to_nobody, make_folder=False)
        try:
            why = f"the process answering on it runs as uid {NOBODY}, not as you"
            with pytest.raises(DaemonUntrusted, match=why) as caught:
                Client(socket=path).resume(agent.workspaces[0])
            assert isinstance(caught.value, DaemonUnreachable)  # so the CLI falls back
            cli = sessionctl(env, agent.base, "--socket", path, "get", "x", "--no-fallback")
        finally:
            received = attacker.received()
        assert cli.returncode == 3 and why in cli.stderr
        assert received == [b"", b""]  # connected, then closed before a byte was sent
    finally:
        shutil.rmtree(folder, ignore_errors=True)
