"""The agent files' edges, on the same harness as test_acceptance.py beside it: sessiond's own
writes set off nothing, the agent's writes are answered, a file turned off is never touched,
a file that cannot be written is reported, a vanished folder is no failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from sessiond.agentfiles import doctor_problems

from tests.support.agent_sim import AgentSim, compact
from tests.support.agentfiles_harness import (
    CACHE,
    INDEX,
    cache_entries,
    expected_cache,
    expected_index,
    index_entries,
    running,
    temp_litter,
)
from tests.support.agentfiles_scenes import Scene, assert_true, planted_corpus, save, workspaces


def test_own_writes_set_off_nothing_and_agent_writes_are_answered(scene: Scene) -> None:
    root, env, global_root, shared = scene.root, scene.env, scene.global_root, scene.shared
    ws = workspaces(root, 2)
    ids = planted_corpus(shared, ws, global_root)
    with running([shared], env) as h:
        h.settle()
        assert_true(shared)
        before = h.files.status()
        # Our own writes' events have reached the indexer by now (the barrier); so does a
        # direct call: recognised, nothing pending, nothing recomputed.
        h.files.agent_file_changed(os.path.join(shared, INDEX))
        h.files.agent_file_changed(os.path.join(shared, CACHE))
        assert h.files.status()["pending_folders"] == 0
        h.settle()
        assert h.files.status() == before
        # The agent writes a wrong entry (a resume repairing with a stale winner): fixed.
        AgentSim(global_root)._upsert_index(shared, ws[0], ids[ws[0]][1])
        # The agent writes the true listing itself: read, found true, not rewritten.
        Path(shared, CACHE).write_bytes(compact({"entries": expected_cache(shared)}))
        h.settle()
        assert_true(shared)
        after = h.files.status()
    assert after["workspace_index"]["writes"] == before["workspace_index"]["writes"] + 1
    assert after["workspace_index"]["repaired"] == before["workspace_index"]["repaired"] + 1
    assert after["listing_cache"]["writes"] == before["listing_cache"]["writes"]


@pytest.mark.parametrize(("index_on", "cache_on"), [(False, True), (True, False), (False, False)])
def test_a_file_turned_off_is_never_touched(scene: Scene, index_on: bool, cache_on: bool) -> None:
    root, env, global_root, shared = scene.root, scene.env, scene.global_root, scene.shared
    ws = workspaces(root, 2)
    planted_corpus(shared, ws, global_root)
    stale = {"entries": {ws[0]: "0b1f3c2e-dead-4bad-8bad-000000000000"}}
    Path(shared, INDEX).write_bytes(compact(stale))
    Path(shared, CACHE).write_bytes(b"{}")

    def fingerprint(name: str) -> tuple[int, int, int, bytes]:
        st = os.stat(os.path.join(shared, name))
        return st.st_ino, st.st_mtime_ns, st.st_size, Path(shared, name).read_bytes()

    before = {name: fingerprint(name) for name in (INDEX, CACHE)}
    sim = AgentSim(global_root, write_index=False)  # so only sessiond could touch the index
    with running([shared], env, workspace_index=index_on, listing_cache=cache_on) as h:
        for workspace in ws:
            save(sim, shared, workspace)
        h.settle()
        status = h.files.status()
    for name, on in ((INDEX, index_on), (CACHE, cache_on)):
        if on:
            assert fingerprint(name) != before[name]
        else:
            assert fingerprint(name) == before[name]
    if index_on:
        assert index_entries(shared) == expected_index(shared)
    if cache_on:
        assert cache_entries(shared) == expected_cache(shared)
    assert status["workspace_index"]["enabled"] is index_on
    assert status["listing_cache"]["enabled"] is cache_on
    assert temp_litter(shared) == []


def test_unwritable_file_is_reported_then_recovers(scene: Scene) -> None:
    root, env, global_root, shared = scene.root, scene.env, scene.global_root, scene.shared
    ws = workspaces(root, 1)
    planted_corpus(shared, ws, global_root)
    blocker = Path(shared, INDEX)
    blocker.mkdir()
    (blocker / "x").write_text("")  # a non-empty folder: even root cannot rename onto it
    with running([shared], env) as h:
        h.settle()
        assert h.files.check() == [f"cannot write {blocker}: Is a directory"]
        assert h.files.status()["workspace_index"]["failures"] >= 1  # attempts, under load 2
        assert cache_entries(shared) == expected_cache(shared)  # the other file is fine
        problems = doctor_problems([shared], workspace_index=True, listing_cache=True)
        assert problems == [f"{blocker} is not a file, so sessiond cannot keep it true; remove it"]
        shutil.rmtree(blocker)
        h.files.notify(shared)
        h.settle()
        assert h.files.check() == []
        assert_true(shared)
    assert temp_litter(shared) == []


def test_a_vanished_folder_is_no_failure(scene: Scene) -> None:
    root, env, global_root, shared = scene.root, scene.env, scene.global_root, scene.shared
    ws = workspaces(root, 1)
    planted_corpus(shared, ws, global_root)
    with running([shared], env) as h:
        h.settle()
        shutil.rmtree(shared)
        h.settle()
        assert h.files.check() == []
        assert h.files.status()["workspace_index"]["failures"] == 0
    assert not os.path.exists(shared)
