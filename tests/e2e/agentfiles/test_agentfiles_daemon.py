"""The agent's own index files with the real daemon: `sessiond run` keeps the agent's
`.workspace_index.json` and `.listing_cache.json` true, honours the settings that turn them
off, and `doctor` reports a file it could not write. Skipped while the writer is not wired into
the daemon.

The `sync` op says when the index has caught up, but nothing says when the writer has written
(it waits for quiet on purpose), so the files are polled with a deadline (`wait_for`).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sessionctl import agent

from tests.support.agent_sim import AgentSim, add_turn, compact, make_workspace, new_session
from tests.support.agentfiles_harness import (
    CACHE,
    INDEX,
    cold_scan,
    fast_path,
    files_true,
    temp_litter,
    workspaces_in,
)
from tests.support.daemon import DaemonProcess, wait_for

TRUE_WITHIN_S = 10.0  # the writer's own bound is about a second; this is for slow machines


def started(daemons: Any, **kwargs: Any) -> DaemonProcess:
    daemon = daemons(**kwargs).start()
    if daemon.client().status().get("agent_files") is None:
        pytest.skip("the agent-files writer is not wired into the daemon yet")
    return daemon


def corpus(base: str, count: int) -> tuple[str, list[str], AgentSim]:
    folder = os.path.join(base, "data", "sessions")
    os.makedirs(folder)
    ws = [make_workspace(base, f"ws{i}")[0] for i in range(count)]
    sim = AgentSim(os.path.join(base, "xdg-data", "codetether-agent"), write_index=False)
    for k in range(3):
        for i, workspace in enumerate(ws):
            sim.save(folder, new_session(workspace), mtime_ns=10**18 + 100 * k + i)
    return folder, ws, sim


def fingerprint(path: str) -> tuple[int, int, int, bytes]:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size, Path(path).read_bytes()


def test_the_daemon_keeps_both_files_true(base: str, daemons: Any) -> None:
    folder, ws, sim = corpus(base, 4)
    oldest = sorted(n for n in os.listdir(folder) if agent.is_session_file_name(n))[0]
    Path(folder, INDEX).write_bytes(compact({"entries": {ws[0]: "missing", ws[1]: oldest[:-5]}}))
    Path(folder, CACHE).write_bytes(b'{"entries":{"/gone.json":1}}')
    daemon = started(daemons, sessions_dirs=[folder], discover=False)
    wait_for(lambda: files_true(folder), TRUE_WITHIN_S, "both files true after start")
    # Agents at work: saves with the agent's own index upserts, a sub-agent, a deletion, a
    # Codex import.
    rng = random.Random(3)
    agents = [AgentSim(sim.global_root) for _ in range(3)]
    sessions = [new_session(rng.choice(ws)) for _ in range(5)]
    for _ in range(30):
        session = rng.choice(sessions)
        add_turn(session, rng, text_bytes=64)
        rng.choice(agents).save(folder, session)
    agents[0].save(folder, new_session(ws[2], agent="explore"))
    os.unlink(os.path.join(folder, f"{sessions[0]['id']}.json"))
    agents[0].import_codex(folder, new_session(ws[3], session_id="codex-import-1"))
    daemon.client().sync()
    wait_for(lambda: files_true(folder), TRUE_WITHIN_S, "both files true after the saves")
    for workspace in workspaces_in(folder):
        assert fast_path(folder, workspace) == cold_scan(folder, workspace) is not None
    status = daemon.client().status()["agent_files"]
    assert status["workspace_index"]["repaired"] >= 1
    assert status["listing_cache"]["dropped"] >= 1
    assert status["problems"] == []
    assert temp_litter(folder) == []


@pytest.mark.parametrize("how", ["flags", "config"])
def test_the_daemon_leaves_a_file_that_is_off_alone(base: str, daemons: Any, how: str) -> None:
    folder, ws, sim = corpus(base, 2)
    Path(folder, INDEX).write_bytes(compact({"entries": {ws[0]: "stale"}}))
    before = fingerprint(os.path.join(folder, INDEX))
    if how == "flags":
        daemon = started(
            daemons, sessions_dirs=[folder], discover=False, extra_args=["--no-workspace-index"]
        )
    else:
        config = os.path.join(base, "sessiond.toml")
        Path(config).write_text("maintain_workspace_index = false\n")
        daemon = started(
            daemons, sessions_dirs=[folder], discover=False, extra_args=["--config", config]
        )
    sim.save(folder, new_session(ws[1]))
    daemon.client().sync()
    # Once the listing cache is true the writer has been through the folder.
    wait_for(lambda: os.path.exists(os.path.join(folder, CACHE)), TRUE_WITHIN_S, "cache")
    status = daemon.client().status()["agent_files"]
    assert status["workspace_index"] == {"enabled": False}
    assert fingerprint(os.path.join(folder, INDEX)) == before
    assert temp_litter(folder) == []


def test_the_daemon_with_both_off_touches_nothing(base: str, daemons: Any) -> None:
    folder, ws, sim = corpus(base, 2)
    Path(folder, INDEX).write_bytes(compact({"entries": {ws[0]: "stale"}}))
    before = fingerprint(os.path.join(folder, INDEX))
    daemon = started(
        daemons,
        sessions_dirs=[folder],
        discover=False,
        extra_args=["--no-workspace-index", "--no-listing-cache"],
    )
    sim.save(folder, new_session(ws[1]))
    daemon.client().sync()
    status = daemon.client().status()["agent_files"]
    assert status["workspace_index"] == status["listing_cache"] == {"enabled": False}
    # With both off no writer thread runs at all, so there is nothing to wait for.
    assert fingerprint(os.path.join(folder, INDEX)) == before
    assert not os.path.exists(os.path.join(folder, CACHE))
    assert temp_litter(folder) == []


def test_doctor_reports_a_file_that_cannot_be_written(base: str) -> None:
    import sessiond.doctor

    if not hasattr(sessiond.doctor, "doctor_problems"):
        pytest.skip("doctor does not check the agent files yet")
    folder, _, _ = corpus(base, 1)
    os.makedirs(os.path.join(folder, INDEX, "inside"))
    env = {**os.environ, "HOME": base, "XDG_CONFIG_HOME": os.path.join(base, "cfg")}
    command = [sys.executable, "-m", "sessiond", "doctor", "--no-discover"]
    result = subprocess.run(
        [*command, "--sessions-dir", folder], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert f"problem: {folder}/{INDEX} is not a file" in result.stdout
    quiet = subprocess.run(
        [*command, "--sessions-dir", folder, "--no-workspace-index"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"{INDEX} is not a file" not in quiet.stdout
