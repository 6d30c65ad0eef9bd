"""Hostile files in the agent's folders: nothing that is not a regular file is ever opened for
a read that can block, nothing is read before its size is known, and one bad file costs its
own answer only. Each test ends with every answer checked against the cold-scan reference.

Non-regular files: a FIFO as a session file (at the first crawl and while serving), as the
agent's sidecar files, as a registry pointer. Size: a symlink to a character device, a sparse
file far larger than memory, a small file of millions of tiny messages. The daemons here run
under an address-space limit so that a daemon that reads a device whole fails quickly instead
of taking the machine's memory.
"""

from __future__ import annotations

import os
import resource
import signal
import stat
from typing import Any

import pytest
from sessionctl import Client

from tests.support.agent_sim import compact
from tests.support.agentfiles_harness import CACHE, INDEX, files_true
from tests.support.daemon import DaemonFactory, DaemonProcess, wait_for
from tests.support.robust import Agent, agent_with, assert_every_answer

ADDRESS_SPACE_LIMIT = 4 << 30  # far above what the daemon needs, far below a device read whole
SYNC_TIMEOUT_S = 20.0


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


@pytest.fixture
def agent(base: str) -> Agent:
    return agent_with(base, {"alpha": (1, 2), "beta": (1, 2)})


def limited(daemons: DaemonFactory, **kwargs: Any) -> DaemonProcess:
    daemon = daemons(**kwargs)
    daemon.preexec = _limit_memory
    return daemon


def check(agent: Agent, client: Client) -> None:
    """`sync` answers in time, and every answer (whole and windowed) is the cold scan's."""
    client.sync(timeout=SYNC_TIMEOUT_S)
    for window in (None, 1):
        assert_every_answer(
            client, agent.served(), agent.workspaces, [*agent.docs, "never-saved"], window=window
        )


def is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


# --- non-regular files ---------------------------------------------------------------------------


def test_fifo_as_a_session_file_blocks_neither_the_crawl_nor_later_saves(
    agent: Agent, daemons: DaemonFactory
) -> None:
    alpha, beta = agent.workspaces
    os.mkfifo(os.path.join(agent.folders[alpha], "early.json"))  # there at the first crawl
    daemon = limited(daemons).start()
    with daemon.client() as client:
        check(agent, client)
        os.mkfifo(os.path.join(agent.folders[beta], "late.json"))  # appears while serving
        agent.save(agent.new(beta, 3))
        agent.save(agent.new(alpha, 1))
        check(agent, client)
        client.rescan()  # a rescan meets both FIFOs again, and answers
        check(agent, client)
        assert daemon.client().status()["sessions"] == len(agent.docs)


def test_fifo_as_a_registry_pointer_blocks_nothing(agent: Agent, daemons: DaemonFactory) -> None:
    registry = agent.sim.registry
    os.makedirs(registry, exist_ok=True)
    os.mkfifo(os.path.join(registry, "fifo-early.path"))  # read with the registry at start
    daemon = limited(daemons).start()
    with daemon.client() as client:
        check(agent, client)
        os.mkfifo(os.path.join(registry, "fifo-late.path"))  # an event for a new pointer
        agent.save(agent.new(agent.workspaces[0], 2))
        check(agent, client)


def test_fifo_as_the_agents_sidecar_files_blocks_nothing(
    agent: Agent, daemons: DaemonFactory
) -> None:
    alpha = agent.workspaces[0]
    folder = agent.folders[alpha]
    agent.sim.write_index = False  # the simulated agent would block on the FIFO itself
    daemon = limited(daemons).start()
    with daemon.client() as client:
        agent.save(agent.new(alpha, 1))
        client.sync(timeout=SYNC_TIMEOUT_S)
        wait_for(lambda: files_true(folder), 15, "the daemon to write both sidecar files")
        for name in (INDEX, CACHE):  # replace what the daemon wrote: it reads its own back
            os.unlink(os.path.join(folder, name))
            os.mkfifo(os.path.join(folder, name))
        agent.save(agent.new(alpha, 2))
        check(agent, client)

        def repaired() -> bool:
            regular = all(is_regular(os.path.join(folder, n)) for n in (INDEX, CACHE))
            return regular and files_true(folder)

        # The FIFOs are replaced by true files (renamed over, never opened for reading).
        wait_for(repaired, 15, "true sidecar files in place of the FIFOs")
        check(agent, client)


# --- size before reading -------------------------------------------------------------------------


def test_device_symlink_and_huge_sparse_file_cost_nothing(
    agent: Agent, daemons: DaemonFactory
) -> None:
    alpha, beta = agent.workspaces
    os.symlink("/dev/zero", os.path.join(agent.folders[alpha], "zero.json"))
    sparse = os.path.join(agent.folders[beta], "sparse.json")
    with open(sparse, "wb") as fh:
        fh.truncate(64 << 30)  # 64 GiB of nothing: larger than memory, no disk used
    daemon = limited(daemons).start()
    with daemon.client() as client:
        check(agent, client)  # the crawl went on past both files
        assert client.status()["sessions"] == len(agent.docs)
        # While serving: a new device link, and a session file grown past the agent's cap.
        os.symlink("/dev/urandom", os.path.join(agent.folders[beta], "random.json"))
        grown = agent.save(agent.new(beta, 1))
        with open(grown, "r+b") as fh:
            fh.truncate(513 << 20)
        os.utime(grown, ns=(agent.tick(), agent.tick()))
        agent.save(agent.new(alpha, 2))
        check(agent, client)
        counts = client.rescan()
        assert counts["added"] == 0 and counts["removed"] == 0
        check(agent, client)


def test_millions_of_tiny_messages_cost_little_memory(agent: Agent, daemons: DaemonFactory) -> None:
    alpha = agent.workspaces[0]
    doc = agent.new(alpha, 0)
    tiny = 2_000_000
    doc["messages"] = [{}] * tiny  # 6 MB of `{},`: a slice object each would be ~110 MiB
    agent.stamp(doc)
    path = os.path.join(agent.folders[alpha], f"{doc['id']}.json")
    with open(path, "wb") as fh:
        fh.write(compact(doc))
    os.utime(path, ns=(agent.tick(), agent.clock))
    agent.docs[doc["id"]] = doc
    daemon = limited(daemons).start()
    assert daemon.proc is not None
    with daemon.client() as client:
        client.sync(timeout=SYNC_TIMEOUT_S)
        header = client.get(doc["id"])["header"]
        assert header["message_count"] == tiny
        assert_every_answer(client, agent.served(), agent.workspaces, list(agent.docs))
        peak = peak_rss(daemon.proc.pid)
    # The bound stated: the index's own header read of a 6 MB file adds no per-message cost;
    # the daemon's whole peak stays under 100 MiB (slices would have added ~110 MiB).
    assert peak < 100 << 20, f"peak RSS {peak >> 20} MiB"


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_stuck_indexer_is_unhealthy_though_its_thread_lives(
    agent: Agent, daemons: DaemonFactory
) -> None:
    # Liveness is not health: the test-only fault gives the indexer a step that blocks (as an
    # open() of a FIFO did) with its thread alive. Without a systemd watchdog, sessiond must
    # see that no step finished for the stall limit and exit 1 for a restart.
    daemon = daemons(env={"SESSIOND_TEST_FAULTS": "indexer_stalls"})
    daemon.allowed_errors.add("unhealthy")
    daemon.start()
    with daemon.client() as client:
        check(agent, client)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGUSR2)
    assert daemon.proc.wait(timeout=60) == 1
    daemon.returncode = 1
    unhealthy = daemon.events_named("unhealthy")
    assert unhealthy and unhealthy[0]["stalled_s"] >= 2
    assert not os.path.exists(daemon.socket_path)  # the stop completed all the same
