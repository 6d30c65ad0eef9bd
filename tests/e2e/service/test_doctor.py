"""`sessiond doctor` against real folders, a real closed TCP port and the real kernel limits."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.notify import short_tmp_dir

SECRET = "doctor-secret-never-printed"


@dataclass
class Doctor:
    base: str
    env: dict[str, str]

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "sessiond", "doctor", "--no-discover"]
        command += [
            "--sessions-dir",
            f"{self.base}/sessions",
            "--socket",
            f"{self.base}/run/s.sock",
        ]
        command += ["--state-dir", f"{self.base}/state"]
        return subprocess.run(
            command, env={**self.env, **env}, capture_output=True, text=True, timeout=60
        )


@pytest.fixture
def doctor() -> Iterator[Doctor]:
    base = short_tmp_dir()
    for folder in ("sessions", "run", "state"):
        os.makedirs(os.path.join(base, folder), mode=0o700)
    env = {"PATH": os.environ["PATH"], "HOME": base, "XDG_CONFIG_HOME": f"{base}/config"}
    yield Doctor(base, env)
    shutil.rmtree(base, ignore_errors=True)


def problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("problem:")]


def test_a_good_setup_without_s3_is_all_well(doctor: Doctor) -> None:
    result = doctor.run()
    assert result.returncode == 0, result.stdout
    assert problems(result) == []
    assert f"ok: socket folder {doctor.base}/run: yours, mode 700" in result.stdout
    assert f"ok: sessions folder {doctor.base}/sessions" in result.stdout
    assert "inotify instances: limit" in result.stdout
    assert "history sink (S3): off" in result.stdout
    assert result.stdout.rstrip().endswith("all is well")


def test_a_socket_folder_others_can_enter_is_a_problem(doctor: Doctor) -> None:
    os.chmod(f"{doctor.base}/run", 0o777)
    result = doctor.run()
    assert result.returncode == 1
    assert problems(result) == [
        f"problem: socket folder {doctor.base}/run has mode 777; run: chmod 700 {doctor.base}/run"
    ]


def test_an_unreachable_s3_endpoint_is_a_problem(doctor: Doctor) -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        result = doctor.run(
            CODETETHER_HISTORY_S3_ENDPOINT=f"http://127.0.0.1:{port}",
            CODETETHER_HISTORY_S3_BUCKET="history",
            CODETETHER_HISTORY_S3_ACCESS_KEY="AKIDDOCTOR",
            CODETETHER_HISTORY_S3_SECRET_KEY=SECRET,
        )
    assert result.returncode == 1
    [problem] = problems(result)
    assert "history sink" in problem and f"127.0.0.1:{port}" in problem
    assert SECRET not in result.stdout + result.stderr


def test_an_unreadable_sessions_folder_and_foreign_socket_are_problems(doctor: Doctor) -> None:
    os.chmod(f"{doctor.base}/sessions", 0o000)
    with open(f"{doctor.base}/run/s.sock", "w") as fh:
        fh.write("a file where the socket goes")
    try:
        result = doctor.run()
    finally:
        os.chmod(f"{doctor.base}/sessions", 0o700)
    found = problems(result)
    assert result.returncode == 1
    assert any("is not a socket" in p for p in found)
    if os.geteuid() != 0:  # root reads whatever the mode says
        assert any("is not readable" in p for p in found)


def test_search_says_whether_fts5_is_there(doctor: Doctor) -> None:
    result = doctor.run()
    assert "ok: search: SQLite FTS5 available" in result.stdout
    missing = doctor.run(SESSIOND_TEST_FAULTS="no_fts5")
    assert missing.returncode == 1
    [problem] = problems(missing)
    assert "search:" in problem and "FTS5" in problem and "unavailable" in problem


def test_a_socket_folder_of_another_user_is_called_a_possible_impersonation(
    doctor: Doctor,
) -> None:
    if os.getuid() != 0:
        pytest.skip("giving a folder to another uid needs root")
    os.chown(f"{doctor.base}/run", 65534, 65534)
    result = doctor.run()
    assert result.returncode == 1
    [problem] = problems(result)
    assert problem.startswith(
        f"problem: socket folder {doctor.base}/run belongs to uid 65534, not to you (uid 0): "
        "another user may be impersonating sessiond, so sessiond refuses to listen there and "
        "sessionctl to talk through it"
    )


def test_each_agent_database_is_checked(doctor: Doctor) -> None:
    from tests.support.agent_sim import new_session
    from tests.support.agent_store import AgentStore

    folder = f"{doctor.base}/sessions"
    AgentStore(folder).save(new_session(doctor.base))
    result = doctor.run()
    assert result.returncode == 0, result.stdout
    assert f"ok: agent database {folder}/sessions.sqlite3: 1 sessions, read-only" in result.stdout
    with open(f"{folder}/sessions.sqlite3", "wb") as fh:
        fh.write(b"garbage" * 1000)
    result = doctor.run()
    assert result.returncode == 1
    [problem] = problems(result)
    assert "agent database cannot be read" in problem and "not a database" in problem
