"""A real `sessiond run` subprocess for the end-to-end tests.

Each daemon gets a private environment (HOME and every XDG folder under the test's own
directory, no CODETETHER_DATA_DIR unless a test sets one), logs JSON lines to a file the test
can read, and is stopped with SIGTERM, which must end it with status 0.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sessionctl import Client

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
REPLY_TIMEOUT_S = 15.0


def private_env(
    base: str, runtime_dir: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """An environment that points every per-user folder under `base` (and the runtime folder,
    which must stay short for AF_UNIX paths, at `runtime_dir`)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONFAULTHANDLER": "1",
        "HOME": os.path.join(base, "home"),
        "XDG_DATA_HOME": os.path.join(base, "xdg-data"),
        "XDG_STATE_HOME": os.path.join(base, "xdg-state"),
        "XDG_CONFIG_HOME": os.path.join(base, "xdg-config"),
        "XDG_RUNTIME_DIR": runtime_dir,
    }
    if os.environ.get("PYTHONPATH"):  # a checkout other than the installed one, under test
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    for name in ("HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
        os.makedirs(env[name], exist_ok=True)
    env.update(extra or {})
    return env


def short_runtime_dir() -> str:
    """A private folder with a short path: AF_UNIX socket paths must stay under 108 bytes."""
    return tempfile.mkdtemp(prefix="sdt-", dir="/tmp")


class DaemonProcess:
    """One `sessiond run` subprocess. `start()` returns once `ping` answers."""

    preexec: Callable[[], None] | None = None  # run in the child just before exec

    def __init__(
        self,
        base: str,
        *,
        sessions_dirs: Iterable[str] = (),
        discover: bool = True,
        env: Mapping[str, str] | None = None,
        extra_args: Iterable[str] = (),
        name: str = "sessiond",
        runtime_dir: str | None = None,
        env_base: str | None = None,
    ) -> None:
        """`base` holds the log and the state folder; `env_base` (default `base`) the HOME and
        XDG folders, so daemons of several tests can share one corpus."""
        self.base = base
        self.runtime_dir = runtime_dir or short_runtime_dir()
        self.env = private_env(env_base or base, self.runtime_dir, env)
        # No --socket: the daemon must find its default path under $XDG_RUNTIME_DIR
        # (docs/protocol.md §1.1).
        self.socket_path = os.path.join(self.runtime_dir, "sessiond", "sessiond.sock")
        self.log_path = os.path.join(base, f"{name}.log")
        self.state_dir = os.path.join(base, f"{name}-state")
        args = [sys.executable, "-m", "sessiond", "run", "--log-format", "json"]
        args += ["--state-dir", self.state_dir]
        for folder in sessions_dirs:
            args += ["--sessions-dir", folder]
        if not discover:
            args.append("--no-discover")
        self.args = [*args, *extra_args]
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.allowed_errors: set[str] = set()
        """Log events of level error or above that the test expects; any other fails it."""

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT_S) -> DaemonProcess:
        """Start the subprocess and return once it answers `ping`."""
        self.spawn()
        self._wait_until_answering(timeout)
        return self

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the subprocess and return at once."""
        assert self.proc is None, "already started"
        assert len(os.fsencode(self.socket_path)) < 108
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=self.preexec,
            )
        return self.proc

    def _wait_until_answering(self, timeout: float) -> None:
        # The one place a short poll loop is right: nothing tells us when a subprocess has bound
        # its socket, so we try to connect (and ping) until it answers or the deadline passes.
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"sessiond exited with {self.proc.returncode} before answering:\n"
                    + self.log_text()
                )
            try:
                with Client(socket=self.socket_path, timeout=timeout) as client:
                    client.ping()
                return
            except Exception as exc:  # not up yet
                last_error = exc
            time.sleep(0.01)
        self.kill()
        raise AssertionError(
            f"sessiond did not answer ping within {timeout}s ({last_error}):\n" + self.log_text()
        )

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait; kill it (and fail) if it does not stop in time. Returns the status."""
        if self.proc is None or self.returncode is not None:
            return self.returncode if self.returncode is not None else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"sessiond did not stop within {timeout}s of SIGTERM:\n" + self.log_text()
            ) from None
        return self.returncode

    def kill(self) -> None:
        """SIGKILL (a crash, as far as the daemon's files are concerned)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)
        if self.proc is not None:
            self.returncode = self.proc.returncode

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self) -> None:
        try:
            if self.running:
                self.kill()
        finally:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)

    # --- talking to it --------------------------------------------------------------------------

    def client(self, timeout: float = REPLY_TIMEOUT_S) -> Client:
        return Client(socket=self.socket_path, timeout=timeout, connect_timeout=timeout)

    def connect_raw(self, timeout: float = REPLY_TIMEOUT_S) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(self.socket_path)
        return sock

    # --- its log --------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def log_events(self) -> list[dict[str, Any]]:
        """Every log line, parsed: each must be one JSON object (docs/logging.md)."""
        events = []
        for number, line in enumerate(self.log_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                raise AssertionError(f"log line {number} is not JSON: {line!r}") from None
            assert isinstance(event, dict) and "event" in event, line
            events.append(event)
        return events

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.log_events() if e["event"] == name]

    def unexpected_errors(self) -> list[dict[str, Any]]:
        return [
            e
            for e in self.log_events()
            if e.get("level") in ("error", "critical") and e["event"] not in self.allowed_errors
        ]


DaemonFactory = Callable[..., DaemonProcess]
"""The `daemons` fixture: makes unstarted daemons, stops and checks them at the end."""


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `condition` until it returns something true, or fail after `timeout` seconds.
    For properties the contract bounds in time ("visible within a second"), not as a stand-in
    for the `sync` op."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.002)


def finish_all(made: list[DaemonProcess]) -> None:
    """As the `daemons` fixture ends: each still running must stop with status 0, and none
    may have logged an error its test did not expect."""
    try:
        for daemon in made:
            if daemon.running:
                assert daemon.stop() == 0, daemon.log_text()
        for daemon in made:
            if daemon.proc is not None:
                assert daemon.unexpected_errors() == [], daemon.log_text()
    finally:
        for daemon in made:
            daemon.cleanup()
