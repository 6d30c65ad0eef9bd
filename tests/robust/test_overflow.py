"""The kernel's inotify queue overflows and events are lost: sessiond notices, rescans what
lost events (with a backoff), and `sync` still means what it says (docs/protocol.md §9).

The queue is made small for real: /proc/sys/fs/inotify/max_queued_events is read when an
inotify instance is created, so it is lowered just before the daemon starts (its one instance
is made while it builds the index) and put back as soon as it answers, before the burst.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.support.agent_sim import add_turn, compact
from tests.support.daemon import DaemonFactory, DaemonProcess, wait_for
from tests.support.robust import Agent, KernelLimit, assert_every_answer, config_args, kernel_limit

MAX_QUEUED = "/proc/sys/fs/inotify/max_queued_events"
SMALL_QUEUE = 1  # a save is 4 events (create, close, the two halves of a rename): it overflows
BURST = 20_000
WORKSPACES = 4
SESSIONS_PER_WORKSPACE = 100


@pytest.fixture
def small_queue() -> Iterator[KernelLimit]:
    """The system's queue limit, lowered (`start`) until a daemon has made its inotify instance."""
    with kernel_limit(MAX_QUEUED, "no real overflow") as limit:
        yield limit


def start(small_queue: KernelLimit, daemon: DaemonProcess) -> DaemonProcess:
    """Start `daemon` with the small queue, then put the system's limit back at once (it
    applies to every inotify instance made meanwhile, other programs' too)."""
    return small_queue.lowered(SMALL_QUEUE, daemon.start)


@pytest.fixture
def agent(base: str) -> Agent:
    agent = Agent(base, os.path.join(base, "ws"))
    for n in range(WORKSPACES):
        agent.save(agent.new(agent.add_workspace(f"w{n}")))  # the folders exist at start
    return agent


def burst(agent: Agent, saves: int) -> list[str]:
    """`saves` saves as the agent makes them (`<id>.json.tmp` renamed over `<id>.json`): new
    sessions first, then re-saves in turn. The journal, pointer and workspace-index writes of
    each save are left out to keep the burst fast; the folders are registered already."""
    agent.sim.write_journal = agent.sim.write_pointer = agent.sim.write_index = False
    ids: list[str] = []
    for n in range(saves):
        workspace = agent.workspaces[n % WORKSPACES]
        if len(ids) < WORKSPACES * SESSIONS_PER_WORKSPACE:
            doc = agent.new(workspace, turns=0)
            ids.append(doc["id"])
        else:
            doc = agent.docs[ids[n % len(ids)]]
            if n % 50 == 0:
                add_turn(doc, agent.rng, 20)
        agent.save(doc)
    return ids


def test_a_burst_that_overflows_the_queue_is_recovered(
    small_queue: KernelLimit, agent: Agent, daemons: DaemonFactory
) -> None:
    daemon = start(small_queue, daemons())
    with daemon.client(timeout=120) as client:
        before = client.status()
        started = time.monotonic()
        ids = burst(agent, BURST)
        burst_s = time.monotonic() - started
        client.sync(timeout=120)  # once it returns, every save above must be in the index
        answers = assert_every_answer(
            client, agent.served(), agent.workspaces, [*agent.docs, "never-saved"]
        )
        status = client.status()
    assert len(ids) == WORKSPACES * SESSIONS_PER_WORKSPACE
    assert status["sessions"] == len(agent.docs)
    assert status["overflows"] >= 1, "the queue never overflowed: the test proves nothing"
    overflow_events = daemon.events_named("overflow")
    assert overflow_events and overflow_events[-1]["count"] == status["overflows"]
    rescans = [e for e in daemon.events_named("rescan") if e.get("reason") == "overflow"]
    assert rescans and status["rescans"] - before["rescans"] >= len(rescans)
    # The backoff bounds the rescans: far fewer than the overflows a storm would cause.
    assert len(rescans) <= status["overflows"]
    print(
        f"\nburst: {BURST} saves in {burst_s:.1f}s, {status['overflows']} overflows survived, "
        f"{len(rescans)} overflow rescans, {answers} answers compared, all right"
    )


def test_sync_waits_for_the_rescan_of_a_folder_that_lost_events(
    small_queue: KernelLimit, agent: Agent, daemons: DaemonFactory
) -> None:
    # Rounds of: saves until the queue overflows again, then `sync` at once. After the first
    # overflow the backoff puts each rescan up to seconds away; `sync` must neither return
    # before that rescan (it would answer from an index that misses saves) nor time out.
    daemon = start(small_queue, daemons())
    with daemon.client(timeout=60) as client:
        burst(agent, 1000)
        for round_ in range(5):
            overflows = client.status()["overflows"]

            def overflowed_again(before: int = overflows) -> bool:
                # With a queue of one event every save overflows it; the sessions get a turn,
                # so an answer from before the rescan would be seen to be stale.
                for doc in list(agent.docs.values())[:8]:
                    agent.save(doc, turn=True)
                return client.status()["overflows"] > before

            # A new overflow counts once the folders of the last one are rescanned, which the
            # backoff delays (doubling): a few saves at a time until then.
            wait_for(overflowed_again, timeout=60, what=f"round {round_}: a new overflow")
            started = time.monotonic()
            client.sync(timeout=30)
            assert time.monotonic() - started < 10, "sync waited out the backoff"
            assert_every_answer(client, agent.served(), agent.workspaces, list(agent.docs))
        assert client.status()["overflows"] >= 5


def test_periodic_reconcile_repairs_what_no_event_reported(
    agent: Agent, daemons: DaemonFactory
) -> None:
    # A session changed through a hard link in a folder nobody watches: no event in its own
    # folder. The periodic stat-only reconcile (short here, 300 s by default) repairs it.
    daemon = daemons(extra_args=config_args(agent.base, "fast", {"reconcile_interval_s": 0.5}))
    daemon.start()
    doc = agent.docs[next(iter(agent.docs))]
    path = agent.path_of(doc["id"])
    hidden = os.path.join(agent.base, "unwatched")
    os.makedirs(hidden)
    os.link(path, os.path.join(hidden, "same-file.json"))
    with daemon.client() as client:
        client.sync()
        count = client.get(doc["id"])["header"]["message_count"]
        add_turn(doc, agent.rng, 30)
        agent.stamp(doc)
        with open(os.path.join(hidden, "same-file.json"), "r+b") as fh:
            fh.truncate(0)
            fh.write(compact(doc))
        client.sync()
        # The precondition: the watcher did not see it.
        assert client.get(doc["id"])["header"]["message_count"] == count

        def repaired() -> bool:
            return client.get(doc["id"])["header"]["message_count"] == count + 4

        wait_for(repaired, timeout=10, what="the periodic reconcile to see the change")
        assert_every_answer(client, agent.served(), agent.workspaces, list(agent.docs))
    periodic = [e for e in daemon.events_named("rescan") if e.get("reason") == "periodic"]
    assert periodic and any(e["updated"] >= 1 for e in periodic)
