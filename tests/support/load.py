"""The load test's agent and clients (tests/robust/test_load.py).

Every save says which save it is, so any answer can be checked on its own, without a snapshot
of the moment it was made: save number `n` of a session that has been saved `k` times has the
title `"n:k"`, `k` messages, mtime T1 + n seconds and `updated_at` BASE + n ms. An answer is
right when its header is consistent with those rules and with the workspace asked about, and
when it never goes back in time: a workspace's winner changes only by saves into it, and saves
only move forward, so a client must never see an older winner (or an older version of a
session) after a newer one; with `sync: true` it must see at least every save finished before
it asked.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

from sessionctl import Client, DaemonError

from tests.support.agent_sim import AgentSim, chrono_time, new_session

T1 = 1_760_000_000 * 10**9
SECOND = 10**9
BASE = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
PER_WORKSPACE = 10


def mtime_of(n: int) -> int:
    return T1 + n * SECOND


def updated_of(n: int) -> str:
    return chrono_time(BASE + dt.timedelta(milliseconds=n))


@dataclass(frozen=True)
class Plan:
    socket: str
    workspaces: tuple[str, ...]
    folders: tuple[str, ...]
    ids: tuple[tuple[str, int], ...]
    """Sessions made before the daemon started, and their workspace: `get` asks for these."""
    requests: int
    threads: int


@dataclass
class Saver:
    """The simulated agent: saves at a fixed rate into the workspaces, in turn at random."""

    sim: AgentSim
    workspaces: Sequence[str]
    folders: Sequence[str]
    rng: random.Random = field(default_factory=lambda: random.Random(11))
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_workspace: list[list[str]] = field(default_factory=list)
    n: int = 0

    def save(self, w: int, doc: dict[str, Any] | None = None) -> tuple[str, int]:
        self.n += 1
        if doc is None:
            doc = new_session(self.workspaces[w], session_id=f"load-w{w}-{len(self.docs):05d}")
            self.docs[doc["id"]] = doc
            while len(self.by_workspace) <= w:
                self.by_workspace.append([])
            self.by_workspace[w].append(doc["id"])
        doc["messages"].append({"role": "user", "content": [{"type": "text", "text": "go"}]})
        doc["pages"].append("conversation")
        doc["title"] = f"{self.n}:{len(doc['messages'])}"
        doc["updated_at"] = updated_of(self.n)
        self.sim.save(self.folders[w], doc, mtime_ns=mtime_of(self.n))
        return doc["id"], self.n

    def prepare(self) -> list[tuple[str, int]]:
        """PER_WORKSPACE sessions in each workspace, before the daemon starts."""
        return [
            (self.save(w)[0], w) for _ in range(PER_WORKSPACE) for w in range(len(self.folders))
        ]

    def step(self) -> tuple[int, int]:
        """One save: a new session one time in five, else another save of one of its own."""
        w = self.rng.randrange(len(self.folders))
        if self.rng.random() < 0.2:
            return w, self.save(w)[1]
        doc = self.docs[self.rng.choice(self.by_workspace[w])]
        return w, self.save(w, doc)[1]

    def run(self, rate: float, stop: threading.Event, progress: SynchronizedArray) -> int:
        """Save `rate` times a second until `stop`; `progress[w]` = the last save into w."""
        saves = 0
        due = time.monotonic()
        while not stop.is_set():
            due += 1 / rate
            delay = due - time.monotonic()
            if delay > 0 and stop.wait(delay):  # the pace of the agent, not a synchronisation
                break
            w, n = self.step()
            progress[w] = n
            saves += 1
        return saves


# --- checking one answer ------------------------------------------------------------------------


def check_header(header: dict[str, Any], plan: Plan, w: int) -> tuple[int, str | None]:
    """(save number, None) for a header consistent with the rules, else (-1, what is wrong)."""
    try:
        n_text, k_text = header["title"].split(":")
        n, k = int(n_text), int(k_text)
    except (AttributeError, ValueError, KeyError):
        return -1, f"title {header.get('title')!r}"
    expected = {
        "mtime_ns": mtime_of(n),
        "message_count": k,
        "updated_at": updated_of(n),
        "directory": plan.workspaces[w],
        "path": os.path.join(plan.folders[w], f"{header.get('id')}.json"),
    }
    for key, value in expected.items():
        if header.get(key) != value:
            return -1, f"{key} {header.get(key)!r} != {value!r} (save {n})"
    return n, None


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    wrong: int = 0
    errors: int = 0
    examples: list[str] = field(default_factory=list)

    def bad(self, kind: str, what: str) -> None:
        if kind == "wrong":
            self.wrong += 1
        else:
            self.errors += 1
        if len(self.examples) < 10:
            self.examples.append(f"{kind}: {what}")

    def merge(self, other: Tally) -> None:
        self.latencies += other.latencies
        self.wrong += other.wrong
        self.errors += other.errors
        self.examples += other.examples[: max(0, 10 - len(self.examples))]


def client_loop(plan: Plan, progress: SynchronizedArray, seed: int, tally: Tally) -> None:
    """One client: `plan.requests` mixed requests on one connection, each checked."""
    rng = random.Random(seed)
    seen: dict[Any, int] = {}  # (kind, key) -> the newest save this client has been shown

    def forward(key: Any, n: int, what: str) -> None:
        if n < seen.get(key, -1):
            tally.bad("wrong", f"{what}: save {n} after save {seen[key]}")
        seen[key] = max(n, seen.get(key, -1))

    with Client(socket=plan.socket, timeout=60, connect_timeout=60) as client:
        for _ in range(plan.requests):
            roll = rng.random()
            w = rng.randrange(len(plan.workspaces))
            asked = time.monotonic()
            try:
                if roll < 0.45:
                    sync = roll < 0.02
                    floor = progress[w] if sync else -1
                    answer = client.resume(plan.workspaces[w], sync=sync)
                    n, error = check_header(answer["header"], plan, w)
                    if error is None and n < floor:
                        error = f"sync resume gave save {n}, save {floor} was done before"
                    if error is None and answer["session_id"] != answer["header"]["id"]:
                        error = "session_id is not the header's id"
                    forward(("resume", w), n, "resume")
                elif roll < 0.8:
                    session_id, w = plan.ids[rng.randrange(len(plan.ids))]
                    window = 2 if roll < 0.5 else None
                    answer = client.get(session_id, window=window)
                    n, error = check_header(answer["header"], plan, w)
                    if error is None and window is not None:
                        messages = answer["session"]["messages"]
                        if len(messages) != min(2, answer["header"]["message_count"]):
                            error = f"window of {len(messages)} messages"
                    forward(("get", session_id), n, f"get {session_id}")
                else:
                    answer = client.list(plan.workspaces[w], limit=5)
                    numbers = []
                    error = None
                    for header in answer["sessions"]:
                        n, error = check_header(header, plan, w)
                        numbers.append(n)
                        if error:
                            break
                    if error is None and numbers != sorted(numbers, reverse=True):
                        error = f"list not newest first: {numbers}"
                    forward(("list", w), answer["total"], "list total")
            except DaemonError as exc:
                tally.bad("error", repr(exc)[:200])
                continue
            except Exception:
                tally.bad("error", traceback.format_exc(limit=2)[-300:])
                continue
            tally.latencies.append(time.monotonic() - asked)
            if error is not None:
                tally.bad("wrong", error)


def client_process(plan: Plan, progress: SynchronizedArray, first_seed: int, out: Any) -> None:
    """`plan.threads` clients in threads; their merged tally goes to `out` (a queue)."""
    tallies = [Tally() for _ in range(plan.threads)]
    threads = [
        threading.Thread(target=client_loop, args=(plan, progress, first_seed + i, tallies[i]))
        for i in range(plan.threads)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = Tally()
    for tally in tallies:
        total.merge(tally)
    out.put(total)
