"""inotify watches used up: a folder that cannot be watched is still served, by polling it,
reported in `status` and by `doctor`, and `sync` covers it (docs/protocol.md, "status").

The limit is lowered for real: /proc/sys/fs/inotify/max_user_watches applies when a watch is
added, so it is lowered only while the daemon meets the new folders (a `sync` proves it has)
and put back at once: it applies to every program of this user meanwhile.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.daemon import DaemonFactory, DaemonProcess, wait_for
from tests.support.robust import Agent, KernelLimit, assert_every_answer, kernel_limit

MAX_WATCHES = "/proc/sys/fs/inotify/max_user_watches"


@pytest.fixture
def watch_limit() -> Iterator[KernelLimit]:
    """The system's watch limit; `exhausted` runs an action with no watch left to add."""
    with kernel_limit(MAX_WATCHES, "no real exhaustion") as limit:
        yield limit


def exhausted(watch_limit: KernelLimit, action: Callable[[], Any]) -> Any:
    """Run `action` with no inotify watch left to add, then give the limit back."""
    return watch_limit.lowered(1, action)


def polled_roots(client: Any) -> set[str]:
    return {r["path"] for r in client.status()["roots"] if r.get("polled")}


def visible_without_sync(client: Any, agent: Agent, workspace: str) -> float:
    """Save a new session in `workspace`; seconds until `resume` (no `sync`) gives it."""
    doc = agent.new(workspace)
    started = time.monotonic()
    agent.save(doc)
    wait_for(
        lambda: client.resume(workspace)["session_id"] == doc["id"],
        timeout=15,
        what="a polled folder's change to become visible",
    )
    return time.monotonic() - started


def test_folders_met_without_watches_left_are_polled(
    watch_limit: KernelLimit, base: str, daemons: DaemonFactory
) -> None:
    agent = Agent(base, os.path.join(base, "ws"))
    watched = agent.add_workspace("watched")
    agent.save(agent.new(watched))
    named = agent.add_workspace("named")  # a registry pointer names it
    asked = agent.add_workspace("asked")  # only a client's question finds it
    daemon = daemons().start()
    with daemon.client(timeout=30) as client:
        client.sync()

        def meet_new_folders() -> None:
            agent.save(agent.new(named))
            agent.sim.write_pointer = False
            agent.save(agent.new(asked))
            agent.sim.write_pointer = True
            client.sync()
            client.resume(asked, sync=True)

        exhausted(watch_limit, meet_new_folders)
        assert_every_answer(client, agent.served(), agent.workspaces, list(agent.docs))
        assert polled_roots(client) == {agent.folders[named], agent.folders[asked]}
        assert daemon.events_named("root_unwatchable")
        # Saves into polled folders: visible within the poll interval without `sync`...
        delays = [visible_without_sync(client, agent, w) for w in (named, asked) * 3]
        # ... and at once after one.
        for workspace in (named, asked):
            doc = agent.new(workspace, turns=2)
            agent.save(doc)
            client.sync()
            assert client.resume(workspace)["session_id"] == doc["id"]
            agent.save(doc, turn=True)
            client.sync()
            assert client.resume(workspace)["header"]["message_count"] == len(doc["messages"])
        assert polled_roots(client) == {agent.folders[named], agent.folders[asked]}
        assert_every_answer(client, agent.served(), agent.workspaces, list(agent.docs))
        doctor = run_doctor(daemon)
        assert doctor.returncode == 1
        assert f"sessions folder {agent.folders[named]} cannot be watched" in doctor.stdout
    print(
        f"\npolled folder: change visible without sync after median "
        f"{statistics.median(delays) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms "
        f"({len(delays)} saves)"
    )


def test_a_registry_met_without_watches_left_is_polled(
    watch_limit: KernelLimit, base: str, daemons: DaemonFactory
) -> None:
    agent = Agent(base, os.path.join(base, "ws"))
    first = agent.add_workspace("first")
    later = agent.add_workspace("later")
    daemon = daemons().start()  # no registry yet: the agent has never run
    with daemon.client(timeout=30) as client:

        def first_save() -> None:
            agent.save(agent.new(first))
            client.sync()
            # Answered right while no watch can be added at all, not only once there can.
            assert_every_answer(client, agent.served(), [first], list(agent.docs))

        exhausted(watch_limit, first_save)
        assert polled_roots(client) == {agent.folders[first]}
        # The registry is polled too: a workspace named later is found without any question
        # about it, by `sync` at once...
        agent.save(agent.new(later))
        client.sync()
        assert_every_answer(client, agent.served(), [later], list(agent.docs))
        ids = {s["id"] for s in client.list()["sessions"]}
        assert ids == set(agent.docs)
        # ... and by the poll without one.
        third = agent.add_workspace("third")
        doc = agent.new(third)
        agent.save(doc)
        wait_for(
            lambda: doc["id"] in {s["id"] for s in client.list()["sessions"]},
            timeout=15,
            what="a pointer in the polled registry to be seen",
        )
        assert_every_answer(client, agent.served(), agent.workspaces, list(agent.docs))


def run_doctor(daemon: DaemonProcess) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sessiond", "doctor"],
        env=daemon.env,
        cwd=daemon.base,
        capture_output=True,
        text=True,
        timeout=60,
    )
