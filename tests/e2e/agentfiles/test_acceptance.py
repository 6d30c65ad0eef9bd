"""The agent's `.workspace_index.json` and `.listing_cache.json` kept true (README, "The agent's
own index files"), with the writer on a real index fed by a real indexer watching real folders
(tests.support.agentfiles_harness): the acceptance checks. The edges (settings off, failures, own
writes) are in test_edges.py beside it.

Synchronisation is by the indexer's `sync` barrier followed by the writer's idle wait: no
sleeps. Every check compares the files with what the agent's own rules compute from the disk.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import threading
import time
from pathlib import Path

import pytest
from sessionctl import agent
from sessiond.agentfiles.writer import DEBOUNCE_S, MAX_DELAY_S

from tests.support.agent_sim import AgentSim, add_turn, compact, make_workspace, new_session
from tests.support.agentfiles_harness import (
    CACHE,
    INDEX,
    cache_entries,
    expected_cache,
    index_entries,
    running,
)
from tests.support.agentfiles_scenes import (
    T0,
    Scene,
    agent_save,
    assert_true,
    directory_of,
    fast_path_hits,
    in_threads,
    planted_corpus,
    save,
    workspaces,
)


def test_mixed_history_leaves_both_files_true(scene: Scene) -> None:
    root, env, global_root, shared = scene.root, scene.env, scene.global_root, scene.shared
    ws = workspaces(root, 6)
    local = make_workspace(root, "ws0")[1]  # ws0's own sessions folder, served too
    os.makedirs(local)
    sim = AgentSim(global_root)
    for i, workspace in enumerate(ws):  # history from before sessiond started
        save(sim, shared, workspace, T0 + i)
    with running([shared, local], env) as h:
        # Several agent processes saving into the same folder at once: their unlocked
        # read-modify-write of the index loses updates.
        def agent_process(n: int) -> None:
            rng = random.Random(n)
            own = AgentSim(global_root)
            sessions = [new_session(rng.choice(ws)) for _ in range(3)]
            for _ in range(25):
                session = rng.choice(sessions)
                add_turn(session, rng)
                agent_save(own, rng.choice([shared, shared, local]), session)

        in_threads(4, agent_process)
        # A sub-agent saving into its parent's workspace repoints it.
        save(sim, shared, ws[1], title="parent")
        save(sim, shared, ws[1], agent="explore", title="sub-agent")
        # The newest session of ws2 is deleted, and every session of ws5 in this folder.
        os.unlink(save(sim, shared, ws[2]))
        for name in os.listdir(shared):
            if agent.is_session_file_name(name) and directory_of(shared, name) == ws[5]:
                os.unlink(os.path.join(shared, name))
        # A session whose directory changed: the agent leaves its old workspace's entry.
        moved = new_session(ws[3])
        sim.save(shared, moved)
        moved["metadata"]["directory"] = ws[4]
        add_turn(moved, random.Random(1))
        sim.save(shared, moved)
        # A Codex import: pretty JSON written in place, no index upsert, offset times.
        imported = new_session(ws[3], session_id="codex-0199-import")
        imported["created_at"] = "2026-08-01T16:00:00.5+02:00"
        sim.import_codex(shared, imported)
        h.settle()
        assert ws[5] not in index_entries(shared)
        assert_true(shared)
        assert_true(local)
        # (How many entries were repaired or dropped depends on the interleaving: a torn
        # index, left by two agents sharing its temporary name, is reset by the next upsert.)
        assert h.files.status()["workspace_index"]["failures"] == 0
    summary = cache_entries(shared)[os.path.join(shared, "codex-0199-import.json")]["summary"]
    assert summary["created_at"] == "2026-08-01T14:00:00.500Z"


def test_planted_stale_index_and_cache_are_repaired(scene: Scene) -> None:
    root, env, global_root, shared = scene.root, scene.env, scene.global_root, scene.shared
    ws = workspaces(root, 6)
    ids = planted_corpus(shared, ws, global_root)
    planted = {
        ws[0]: ids[ws[0]][0],  # an older session of the workspace
        ws[1]: "0b1f3c2e-dead-4bad-8bad-000000000000",  # a missing file
        ws[2]: ids[ws[3]][3],  # another workspace's session
        ws[3]: ids[ws[3]][3],  # right: kept
        "/nowhere/else": "0b1f3c2e-dead-4bad-8bad-000000000001",  # dead, no such workspace
    }  # ws4, ws5 missing
    Path(shared, INDEX).write_bytes(compact({"entries": planted}))
    stale_cache = expected_cache(shared)
    first = next(iter(stale_cache))
    stale_cache[first]["mtime_ns"] -= 1
    stale_cache[os.path.join(shared, "gone.json")] = stale_cache[first]
    Path(shared, CACHE).write_bytes(compact({"entries": stale_cache}))
    assert fast_path_hits(shared) == 1
    with running([shared], env) as h:
        h.settle()
        assert_true(shared)
        assert fast_path_hits(shared) == 6
        status = h.files.status()
    index_stats, cache_stats = status["workspace_index"], status["listing_cache"]
    assert (index_stats["repaired"], index_stats["added"], index_stats["dropped"]) == (3, 2, 1)
    assert index_stats["writes"] == 1
    assert (cache_stats["repaired"], cache_stats["dropped"], cache_stats["writes"]) == (1, 1, 1)


@pytest.mark.parametrize(
    "garbage", [b'{"entries":{"/a":"b"', b"\x00\xff", b"[]", b"{}", b'{"entries":{"/a":7}}']
)
def test_corrupt_files_are_replaced(scene: Scene, garbage: bytes) -> None:
    root, env, global_root, shared = scene.root, scene.env, scene.global_root, scene.shared
    ws = workspaces(root, 2)
    planted_corpus(shared, ws, global_root)
    Path(shared, INDEX).write_bytes(garbage)
    Path(shared, CACHE).write_bytes(garbage if garbage != b"{}" else b"[]")
    with running([shared], env) as h:
        h.settle()
        assert_true(shared)
        status = h.files.status()
    assert status["workspace_index"]["corrupt"] == 1
    assert status["listing_cache"]["writes"] == 1


def test_burst_of_200_saves_with_the_agent_writing_too(scene: Scene) -> None:
    root, env, global_root, shared = scene.root, scene.env, scene.global_root, scene.shared
    ws = workspaces(root, 5)
    stamps: list[float] = []  # when anything changed the folder (list.append is atomic)
    done = threading.Event()
    with running([shared], env) as h:

        def agent_process(n: int) -> None:
            rng = random.Random(n)
            own = AgentSim(global_root)
            sessions = [new_session(rng.choice(ws)) for _ in range(4)]
            for _ in range(50):
                session = rng.choice(sessions)
                add_turn(session, rng, text_bytes=64)
                agent_save(own, shared, session)
                stamps.append(time.monotonic())

        def rogue_index() -> None:
            # Another agent repairing its index with a stale answer, over and over.
            while not done.is_set():
                names = [n for n in os.listdir(shared) if agent.is_session_file_name(n)]
                if names:
                    stale = random.choice(names).removesuffix(".json")
                    try:
                        AgentSim(global_root)._upsert_index(shared, random.choice(ws), stale)
                    except FileNotFoundError:
                        pass  # lost the shared temporary name to another agent, as above
                    stamps.append(time.monotonic())
                done.wait(0.02)

        listings: list[bytes] = []

        def agent_listing() -> None:
            # An agent opening its picker: computes the listing, writes it in place.
            while not done.is_set():
                listings.append(compact({"entries": expected_cache(shared)}))
                Path(shared, CACHE).write_bytes(listings[-1])
                stamps.append(time.monotonic())
                done.wait(0.05)

        others = [threading.Thread(target=rogue_index), threading.Thread(target=agent_listing)]
        for thread in others:
            thread.start()
        try:
            in_threads(4, agent_process)
        finally:
            done.set()
            for thread in others:
                thread.join()
        # The last changes of all: an agent repairing ws0 with another workspace's session.
        stranger = next(
            n
            for n in os.listdir(shared)
            if agent.is_session_file_name(n) and directory_of(shared, n) != ws[0]
        )
        AgentSim(global_root)._upsert_index(shared, ws[0], stranger.removesuffix(".json"))
        Path(shared, CACHE).write_bytes(listings[0])  # and a listing from long ago
        stamps.append(time.monotonic())
        h.settle()
        assert_true(shared)
        status = h.files.status()
    # The writer's guarantee: a folder is written at most once per MAX_DELAY_S while changes
    # keep coming, once more after every quiet spell of DEBOUNCE_S, and once at the end.
    stamps.sort()
    duration = stamps[-1] - stamps[0]
    quiet = sum(1 for a, b in itertools.pairwise(stamps) if b - a > DEBOUNCE_S / 2)
    bound = 2 + math.ceil(duration / MAX_DELAY_S) + quiet
    for kind in ("workspace_index", "listing_cache"):
        assert 1 <= status[kind]["writes"] <= bound, (kind, status, duration, quiet)
    assert bound <= 12, (duration, quiet)  # 200 saves, a few seconds at most
