"""Figures for the agent's own index files: writes of each agent file per 100 saves, time from
a save to both files being true, and the agent's fast-path hits before and after sessiond on a
stale index.

Run: .venv/bin/python -m bench.agentfiles_figures   (about a minute)

The writer runs on a real index fed by a real indexer (tests.support.agentfiles_harness). Times are
taken by polling the files against the agent's rules every 2 ms: nothing signals "the file is
now true" to an outside observer, so polling with a deadline is the measurement.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.support.agent_sim import AgentSim, add_turn, compact, make_workspace, new_session
from tests.support.agentfiles_harness import (
    INDEX,
    cache_entries,
    cold_scan,
    fast_path,
    files_true,
    running,
    workspaces_in,
)
from tests.support.stats import percentile

POLL_S = 0.002


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> float:
    """Seconds until `condition` held (polled: see the module doc)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError("the files did not become true")
        time.sleep(POLL_S)
    return time.monotonic() - started


def setup(base: str, workspaces: int) -> tuple[dict[str, str], str, list[str], str]:
    env = {"HOME": os.path.join(base, "home"), "XDG_DATA_HOME": os.path.join(base, "xdg")}
    os.makedirs(env["HOME"])
    folder = os.path.join(base, "data", "sessions")
    os.makedirs(folder)
    ws = [make_workspace(base, f"ws{i}")[0] for i in range(workspaces)]
    return env, folder, ws, os.path.join(env["XDG_DATA_HOME"], "codetether-agent")


def writes(status: dict[str, Any]) -> tuple[int, int]:
    return status["workspace_index"]["writes"], status["listing_cache"]["writes"]


def regime(name: str, saves: int, agents: int, gap_s: float, wait_true: bool) -> None:
    """`agents` agent processes save `saves` times in all, `gap_s` apart each; with
    `wait_true`, each save waits until both files are true before the next."""
    with tempfile.TemporaryDirectory() as tmp:
        env, folder, ws, global_root = setup(os.path.realpath(tmp), 4)
        sims = [AgentSim(global_root) for _ in range(agents)]
        rng = random.Random(1)
        sessions = [new_session(rng.choice(ws)) for _ in range(6)]
        for session in sessions:
            sims[0].save(folder, session)
        with running([folder], env) as h:
            h.settle()
            before = writes(h.files.status())
            latencies: list[float] = []
            lock = threading.Lock()

            def agent(n: int) -> None:
                own = random.Random(n)
                for _ in range(saves // agents):
                    session = own.choice(sessions)
                    with lock:  # one process owns a session at a time, as in life
                        add_turn(session, own, text_bytes=64)
                        snapshot = dict(session)
                    try:
                        sims[n].save(folder, snapshot)
                    except FileNotFoundError:
                        pass  # agents share the index's temporary name; the agent goes on
                    if wait_true:
                        latencies.append(wait_until(lambda: files_true(folder)))
                    elif gap_s:
                        time.sleep(gap_s)

            started = time.monotonic()
            threads = [threading.Thread(target=agent, args=(n,)) for n in range(agents)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            last = time.monotonic()
            settle = wait_until(lambda: files_true(folder))
            h.settle()
            after = writes(h.files.status())
            repairs = h.files.status()["workspace_index"]["repaired"]
        index_w, cache_w = (a - b for a, b in zip(after, before, strict=True))
        scale = 100 / saves
        print(
            f"{name}: {saves} saves by {agents} agent(s) over {last - started:.1f}s -> "
            f"per 100 saves: {index_w * scale:.1f} index writes, {cache_w * scale:.1f} cache "
            f"writes; index repairs {repairs}; true {settle * 1000:.0f} ms after the last save"
        )
        if latencies:
            print(
                f"  save -> both files true: p50 {statistics.median(latencies) * 1000:.0f} ms, "
                f"p99 {percentile(latencies, 99) * 1000:.0f} ms, "
                f"max {max(latencies) * 1000:.0f} ms"
            )


def stream_latency(saves: int, gap_s: float) -> None:
    """Under a steady stream: time from a save until the cache holds that version (or newer),
    seen by a thread polling the cache file while the stream goes on."""
    with tempfile.TemporaryDirectory() as tmp:
        env, folder, ws, global_root = setup(os.path.realpath(tmp), 2)
        sim = AgentSim(global_root)
        session = new_session(ws[0])
        path = sim.save(folder, session)
        rng = random.Random(2)
        saved: list[tuple[float, int]] = []
        seen: list[tuple[float, int]] = []
        done = threading.Event()

        def observe() -> None:
            while not done.is_set():
                entry = (cache_entries(folder) or {}).get(path)
                if entry is not None and (not seen or seen[-1][1] != entry["mtime_ns"]):
                    seen.append((time.monotonic(), entry["mtime_ns"]))
                time.sleep(POLL_S)

        with running([folder], env) as h:
            h.settle()
            observer = threading.Thread(target=observe)
            observer.start()
            for _ in range(saves):
                add_turn(session, rng, text_bytes=64)
                sim.save(folder, session)
                saved.append((time.monotonic(), os.stat(path).st_mtime_ns))
                time.sleep(gap_s)
            wait_until(lambda: (cache_entries(folder) or {})[path]["mtime_ns"] >= saved[-1][1])
            h.settle()
            done.set()
            observer.join()
        delays = [next(t for t, m in seen if m >= mtime) - at for at, mtime in saved]
        print(
            f"steady stream ({1 / gap_s:.0f} saves/s, {saves} saves): save -> cache holds it: "
            f"p50 {statistics.median(delays) * 1000:.0f} ms, "
            f"p99 {percentile(delays, 99) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms"
        )


def planted_hits(workspaces: int, per_workspace: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env, folder, ws, global_root = setup(os.path.realpath(tmp), workspaces)
        sim = AgentSim(global_root, write_index=False)
        ids: dict[str, list[str]] = {w: [] for w in ws}
        for k in range(per_workspace):
            for i, workspace in enumerate(ws):
                p = sim.save(folder, new_session(workspace), mtime_ns=(10**18 + k * 1000 + i))
                ids[workspace].append(os.path.basename(p).removesuffix(".json"))
        planted = {}
        for i, workspace in enumerate(ws):
            kind = i % 6
            if kind in (0, 1):
                planted[workspace] = ids[workspace][0]  # an older session
            elif kind == 2:
                planted[workspace] = f"gone-{i}"  # a missing file
            elif kind == 3:
                planted[workspace] = ids[ws[(i + 1) % len(ws)]][-1]  # another workspace's
            elif kind == 4:
                planted[workspace] = ids[workspace][-1]  # right
            # kind 5: no entry
        with open(os.path.join(folder, INDEX), "wb") as fh:
            fh.write(compact({"entries": planted}))

        def hits() -> int:
            return sum(
                1
                for w in workspaces_in(folder)
                if (found := fast_path(folder, w)) is not None and found == cold_scan(folder, w)
            )

        before = hits()
        with running([folder], env) as h:
            started = time.monotonic()
            h.settle()
            took = time.monotonic() - started
            after = hits()
        print(
            f"planted stale index ({workspaces} workspaces, {workspaces * per_workspace} "
            f"sessions): agent fast-path hits {before}/{workspaces} before, "
            f"{after}/{workspaces} after (repaired {took * 1000:.0f} ms after start)"
        )


def main() -> None:
    regime("isolated saves", 100, 1, 0, wait_true=True)
    regime("one agent, 10 saves/s", 100, 1, 0.1, wait_true=False)
    regime("burst, 4 agents", 200, 4, 0, wait_true=False)
    regime("4 agents racing, 10 saves/s each", 200, 4, 0.1, wait_true=False)
    stream_latency(100, 0.05)
    planted_hits(60, 5)


if __name__ == "__main__":
    main()
