"""The daemon as the benchmarks run it: one `sessiond run` subprocess with a JSON log file, ready
once `ping` answers, stopped with SIGTERM. Every benchmark that starts a daemon uses this."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from sessionctl import Client
from sessionctl.client import DaemonUnreachable

READY_DEADLINE_S = 600.0  # a first start on the 100,000-session corpus takes ~20 s cold
STOP_DEADLINE_S = 60.0


def log_events(log_path: str, name: str) -> list[dict[str, Any]]:
    """The daemon's JSON log lines whose `event` is `name`."""
    events = []
    with open(log_path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == name:
                    events.append(event)
    return events


class Daemon:
    """One `sessiond run` subprocess: `work/<tag>.log` holds its log, `socket` (default
    `work/<tag>.sock`) its socket. Made unstarted; `start()` returns once it is ready."""

    def __init__(
        self,
        work: str,
        tag: str,
        env: dict[str, str],
        state_dir: str,
        sessions_dirs: Sequence[str] = (),
        discover: bool = True,
        socket: str | None = None,
    ) -> None:
        self.work = work
        self.env = env
        self.socket = socket or os.path.join(work, f"{tag}.sock")
        self.log_path = os.path.join(work, f"{tag}.log")
        args = [sys.executable, "-m", "sessiond", "run", "--socket", self.socket]
        args += ["--state-dir", state_dir, "--log-format", "json"]
        if not discover:
            args.append("--no-discover")
        for folder in sessions_dirs:
            args += ["--sessions-dir", folder]
        self.args = args
        self._proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0  # perf_counter at spawn
        self.ready_s = 0.0  # spawn to the first `ping` answered
        self.ready_event: dict[str, Any] = {}  # the daemon's own `ready` log event

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self._proc is not None, "the daemon was not started"
        return self._proc

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, deadline_s: float = READY_DEADLINE_S) -> Daemon:
        """Spawn it and wait until `ping` answers (it answers only once the index is built)."""
        assert self._proc is None, "already started"
        with open(self.log_path, "wb") as log_fh:  # the child keeps its own copy
            self.started = time.perf_counter()
            self._proc = subprocess.Popen(
                self.args,
                env=self.env,
                cwd=self.work,
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=log_fh,
            )
        deadline = time.monotonic() + deadline_s
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"sessiond exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise RuntimeError(f"sessiond not ready in {deadline_s}s:\n{self.log_tail()}")
            try:
                with Client(socket=self.socket, timeout=remaining, connect_timeout=0.05) as client:
                    client.ping()
                break
            except DaemonUnreachable:
                time.sleep(0.002)  # the socket is not bound yet: nothing signals when it is
        self.ready_s = time.perf_counter() - self.started
        ready = self.log_events("ready")
        self.ready_event = ready[-1] if ready else {}
        return self

    def client(self, timeout: float = 30.0) -> Client:
        return Client(socket=self.socket, timeout=timeout, connect_timeout=timeout)

    def log_events(self, name: str) -> list[dict[str, Any]]:
        return log_events(self.log_path, name)

    def log_tail(self, lines: int = 30) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])

    def stop(self, timeout: float = STOP_DEADLINE_S) -> float:
        """SIGTERM and wait (kill past `timeout`, and fail); returns the seconds it took."""
        began = time.perf_counter()
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"sessiond did not stop within {timeout}s") from None
        return time.perf_counter() - began

    def close(self) -> None:
        """SIGKILL if still running: for the `finally` of a run that failed half-way."""
        if self.running:
            self.proc.kill()
            self.proc.wait()


def start_daemon(
    work: str,
    tag: str,
    env: dict[str, str],
    state_dir: str,
    sessions_dirs: Sequence[str],
    discover: bool,
    socket: str | None = None,
) -> Daemon:
    """A started `Daemon` (see there)."""
    return Daemon(work, tag, env, state_dir, sessions_dirs, discover, socket).start()
