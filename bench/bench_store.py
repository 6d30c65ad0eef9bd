"""Figures for the agent's SQLite generation (docs/storage.md), printed:

- the first index build of an N-session database (the daemon's `index_built` duration and the
  time from start to `ping` answering);
- memory per database session (resident memory over an empty daemon, divided by N), beside the
  same figure for N legacy files of the same sessions;
- `resume` p50/p99, database sessions against file sessions (same N, same sessions, one daemon
  serving both folders), with no window and with `window: 1000`;
- save -> visible: a database commit until its `session_saved` event on `watch`, p50/p99;
- the agent writer's longest `BEGIN IMMEDIATE` wait while 8 clients query sessiond.

The corpus is written by tests/support/agent_store.py (the agent's schema and encoding; the
initial rows in one transaction, later saves one connection and commit each) and
tests/support/agent_sim.py (legacy files).

    .venv/bin/python -m bench.bench_store                 # 10,000 sessions
    .venv/bin/python -m bench.bench_store --sessions 500  # a quick run
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import threading
import time
from typing import Any

from bench.common import log
from bench.daemon import Daemon
from tests.support.agent_sim import AgentSim, add_turn, new_session
from tests.support.agent_store import AgentStore
from tests.support.daemon import private_env
from tests.support.stats import percentile


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def make_sessions(workspaces: list[str], count: int, turns: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    sessions = []
    for number in range(count):
        session = new_session(workspaces[number % len(workspaces)])
        for _ in range(turns):
            add_turn(session, rng, 300)
        sessions.append(session)
    return sessions


def workspace_folders(base: str, name: str, count: int) -> tuple[list[str], str]:
    workspaces = []
    for number in range(count):
        workspace = os.path.join(base, name, f"ws-{number:04d}")
        os.makedirs(os.path.join(workspace, ".git"), exist_ok=True)
        workspaces.append(workspace)
    folder = os.path.join(base, name, "sessions")
    os.makedirs(folder, exist_ok=True)
    return workspaces, folder


def start(base: str, name: str, folders: list[str]) -> tuple[Daemon, float]:
    state = os.path.join(base, f"{name}-state")
    daemon = Daemon(base, name, private_env(base, base), state, folders, discover=False)
    began = time.perf_counter()
    daemon.start()
    with daemon.client(timeout=600) as client:
        client.sync(timeout=600)
    return daemon, time.perf_counter() - began


def rss(daemon: Daemon) -> int:
    with daemon.client() as client:
        return int(client.status()["memory"]["rss_bytes"])


def timed_resumes(
    daemon: Daemon, workspaces: list[str], requests: int, window: int | None
) -> list[float]:
    times = []
    with daemon.client(timeout=60) as client:
        for number in range(requests):
            workspace = workspaces[number % len(workspaces)]
            began = time.perf_counter()
            client.resume(workspace, window=window)
            times.append(time.perf_counter() - began)
    return times


def timed_gets(daemon: Daemon, ids: list[str]) -> list[float]:
    """`get` with `window: 1000` once per session: each a tail-cache miss (a read)."""
    times = []
    with daemon.client(timeout=60) as client:
        for session_id in ids:
            began = time.perf_counter()
            client.get(session_id, window=1000)
            times.append(time.perf_counter() - began)
    return times


def summary(times: list[float]) -> str:
    return f"p50 {ms(percentile(times, 50))}, p99 {ms(percentile(times, 99))} (n={len(times)})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--workspaces", type=int, default=100)
    parser.add_argument("--turns", type=int, default=6, help="4 messages and 1 tool use each")
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--saves", type=int, default=200)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    base = os.path.realpath(tempfile.mkdtemp(prefix="sessiond-bench-store-"))
    daemons: list[Daemon] = []
    try:
        n = args.sessions
        log(f"corpus: {n} database sessions and {n} legacy files, {args.turns} turns each")
        db_ws, db_folder = workspace_folders(base, "db", args.workspaces)
        file_ws, file_folder = workspace_folders(base, "files", args.workspaces)
        _, empty_folder = workspace_folders(base, "empty", 1)
        store = AgentStore(db_folder)
        db_sessions = make_sessions(db_ws, n, args.turns, 1)
        store.save_many(db_sessions)
        sim = AgentSim(os.path.join(base, "global"), write_pointer=False, write_journal=False)
        file_ids = []
        for session in make_sessions(file_ws, n, args.turns, 1):
            sim.save(file_folder, session)
            file_ids.append(session["id"])
        db_bytes = os.path.getsize(os.path.join(db_folder, "sessions.sqlite3"))
        log(f"database {db_bytes / 2**20:.1f} MiB")

        empty, _ = start(base, "empty", [empty_folder])
        daemons.append(empty)
        rss_empty = rss(empty)
        empty.stop()

        db_only, db_ready_s = start(base, "db-only", [db_folder])
        daemons.append(db_only)
        (built,) = db_only.log_events("index_built")
        rss_db = rss(db_only)
        db_only.stop()

        files_only, files_ready_s = start(base, "files-only", [file_folder])
        daemons.append(files_only)
        rss_files = rss(files_only)
        files_only.stop()

        both, _ = start(base, "both", [db_folder, file_folder])
        daemons.append(both)
        resume_db = timed_resumes(both, db_ws, args.requests, None)
        resume_files = timed_resumes(both, file_ws, args.requests, None)
        resume_db_w = timed_resumes(both, db_ws, args.requests, 1000)
        resume_files_w = timed_resumes(both, file_ws, args.requests, 1000)
        cold_db = timed_gets(both, [s["id"] for s in db_sessions][: args.requests])
        cold_files = timed_gets(both, file_ids[: args.requests])

        log("saves: commit -> session_saved on watch")
        visible = []
        with both.client(timeout=60) as watcher:
            events = watcher.watch()
            rng = random.Random(5)
            for number in range(args.saves):
                session = db_sessions[number % len(db_sessions)]
                add_turn(session, rng, 200)
                store.save(session)
                committed = time.perf_counter()
                for event in events:
                    if event.get("event") != "session_saved":
                        continue
                    if event["session_id"] == session["id"]:
                        visible.append(time.perf_counter() - committed)
                        break

        log("saves while 8 clients query")
        store.stats.waits_s.clear()
        stop = threading.Event()

        def query(offset: int) -> None:
            with both.client(timeout=60) as client:
                number = offset
                while not stop.is_set():
                    client.resume(db_ws[number % len(db_ws)], window=1000)
                    number += 1

        threads = [threading.Thread(target=query, args=(k,), daemon=True) for k in range(8)]
        for thread in threads:
            thread.start()
        rng = random.Random(6)
        for number in range(args.saves):
            session = db_sessions[(number * 7) % len(db_sessions)]
            add_turn(session, rng, 200)
            store.save(session)
        stop.set()
        for thread in threads:
            thread.join(60)
        waits = store.stats.waits_s
        commits = store.stats.commits_s[-args.saves :]
        both.stop()

        print(f"\nsessiond and the agent's SQLite store: {n} sessions per kind, "
              f"{args.turns * 4} messages each, database {db_bytes / 2**20:.1f} MiB, "
              f"{args.workspaces} workspaces")  # fmt: skip
        print(f"first index build of the {n}-session database: index_built "
              f"{built['duration_ms']:.0f} ms; start -> ready+sync {db_ready_s:.2f} s "
              f"(files: {files_ready_s:.2f} s)")  # fmt: skip
        print(f"memory per database session: {(rss_db - rss_empty) / n:.0f} B "
              f"(file session: {(rss_files - rss_empty) / n:.0f} B; empty daemon "
              f"{rss_empty / 2**20:.1f} MiB)")  # fmt: skip
        print(f"resume, no window:   database {summary(resume_db)}; files {summary(resume_files)}")
        print(f"resume, window 1000: database {summary(resume_db_w)}; "
              f"files {summary(resume_files_w)}")  # fmt: skip
        print(f"get window 1000, each session once (tail cache misses): database "
              f"{summary(cold_db)}; files {summary(cold_files)}")  # fmt: skip
        print(f"database commit -> watch session_saved: {summary(visible)}")
        print(f"agent writer while 8 clients query: longest BEGIN IMMEDIATE wait "
              f"{ms(max(waits))} over {len(waits)} saves; commit p50 "
              f"{ms(percentile(commits, 50))}, p99 {ms(percentile(commits, 99))}")  # fmt: skip
    finally:
        for daemon in daemons:
            daemon.close()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base}")


if __name__ == "__main__":
    main()
