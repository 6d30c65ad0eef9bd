"""Scenes for the agent-files tests: folders, agents saving the agent's way, and checks that
both files are true (the oracles are in tests.support.agentfiles_harness)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.agent_sim import AgentSim, make_workspace, new_session
from tests.support.agentfiles_harness import (
    cache_entries,
    cold_scan,
    expected_cache,
    expected_index,
    fast_path,
    index_entries,
    temp_litter,
    workspaces_in,
)

T0 = 1_780_000_000_000_000_000  # explicit mtimes (ns) where order must not depend on the clock


@dataclass
class Scene:
    root: str  # the test's folder, resolved
    env: dict[str, str]  # HOME and XDG_DATA_HOME under root
    global_root: str  # the agent's global folder (location registry)
    shared: str  # one sessions folder for many workspaces, as with CODETETHER_DATA_DIR

    @classmethod
    def make(cls, tmp_path: Path) -> Scene:
        root = os.path.realpath(tmp_path)
        os.makedirs(os.path.join(root, "home"))
        env = {"HOME": os.path.join(root, "home"), "XDG_DATA_HOME": os.path.join(root, "xdg")}
        shared = os.path.join(root, "data", "sessions")
        os.makedirs(shared)
        return cls(root, env, os.path.join(env["XDG_DATA_HOME"], "codetether-agent"), shared)


def workspaces(root: str, count: int) -> list[str]:
    return [make_workspace(root, f"ws{i}")[0] for i in range(count)]


def assert_true(folder: str) -> None:
    """Both files say exactly what the agent's rules compute, and the fast path hits."""
    assert index_entries(folder) == expected_index(folder)
    for workspace in workspaces_in(folder):
        found = fast_path(folder, workspace)
        assert found is not None, f"fast path misses {workspace}"
        assert found == cold_scan(folder, workspace)
    assert cache_entries(folder) == expected_cache(folder)
    assert temp_litter(folder) == []


def directory_of(folder: str, name: str) -> Any:
    return json.loads(Path(folder, name).read_text())["metadata"]["directory"]


def save(sim: AgentSim, folder: str, directory: str, mtime_ns: int | None = None, **kw: Any) -> str:
    session = new_session(directory, **kw)
    return sim.save(folder, session, mtime_ns=mtime_ns)


def agent_save(sim: AgentSim, folder: str, session: dict[str, Any]) -> None:
    """A save by one of several agent processes: they share the index's fixed temporary name,
    so an upsert can lose its file to another's rename; the agent logs that and goes on."""
    try:
        sim.save(folder, session)
    except FileNotFoundError:
        assert os.path.exists(os.path.join(folder, f"{session['id']}.json"))


def in_threads(count: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def planted_corpus(shared: str, ws: list[str], global_root: str) -> dict[str, list[str]]:
    """Four sessions per workspace, older to newer, saved without the agent's index."""
    sim = AgentSim(global_root, write_index=False)
    ids: dict[str, list[str]] = {w: [] for w in ws}
    for k in range(4):
        for i, workspace in enumerate(ws):
            path = save(sim, shared, workspace, T0 + 100 * k + i)
            ids[workspace].append(os.path.basename(path).removesuffix(".json"))
    return ids


def fast_path_hits(folder: str) -> int:
    return sum(
        1
        for w in workspaces_in(folder)
        if (f := fast_path(folder, w)) and f == cold_scan(folder, w)
    )
