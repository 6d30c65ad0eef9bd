"""Known holes around served folders: a served folder deleted while sessiond keeps the agent's
files in it, deleted folders looked for forever, and a folder back from mode 000."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.daemon import DaemonFactory, DaemonProcess, finish_all, wait_for
from tests.support.robust import Agent, PlainUserDaemon, assert_every_answer, modes_apply_to_daemon

SESSIONS = 300
UNLINK_PACE_S = 0.005
"""The deleting `rm -rf` here is slowed to a file per 5 ms (a slow or loaded disk): it then
takes 1.5 s, over the agent-file writer's longest delay. This is no wait for the daemon."""


@pytest.fixture
def agent(base: str) -> Agent:
    agent = Agent(base, os.path.join(base, "ws"))
    for name in ("keep", "other"):
        agent.add_workspace(name)
    return agent


def slow_rm_rf(folder: str) -> None:
    """`rm -rf folder` as fts does it: list the folder once, remove each entry, then the
    folder (which fails with ENOTEMPTY if anything was created in it meanwhile)."""
    names = os.listdir(folder)
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            slow_rm_rf(path)
        else:
            os.unlink(path)
        time.sleep(UNLINK_PACE_S)
    os.rmdir(folder)


def test_deleting_a_served_folder_is_not_raced_by_the_agent_file_writer(
    agent: Agent, daemons: DaemonFactory
) -> None:
    keep, doomed = agent.workspaces
    agent.save(agent.new(keep))
    for _ in range(SESSIONS):
        agent.save(agent.new(doomed))
    daemon = daemons().start()
    with daemon.client() as client:
        client.sync()
        # The writer keeps .workspace_index.json and .listing_cache.json in the folder.
        folder = agent.folders[doomed]
        cache = os.path.join(folder, ".listing_cache.json")
        wait_for(lambda: os.path.exists(cache), timeout=15, what="the writer's listing cache")
        slow_rm_rf(folder)  # raises OSError (ENOTEMPTY) if the writer wrote in it meanwhile
        assert not os.path.exists(folder)
        for session_id in [
            i for i, d in agent.docs.items() if d["metadata"]["directory"] == doomed
        ]:
            del agent.docs[session_id]
        client.sync()
        assert_every_answer(client, agent.served(), agent.workspaces, list(agent.docs))


def test_deleted_folders_are_not_looked_for_until_named_again(
    agent: Agent, daemons: DaemonFactory
) -> None:
    keep, doomed = agent.workspaces
    agent.save(agent.new(keep))
    gone = [agent.add_workspace(f"gone{n}") for n in range(5)]
    for workspace in [doomed, *gone]:
        agent.save(agent.new(workspace))
    daemon = daemons().start()
    with daemon.client() as client:
        client.sync()
        for workspace in [doomed, *gone]:
            folder = agent.folders[workspace]
            for name in os.listdir(folder):
                os.unlink(os.path.join(folder, name))
            os.rmdir(folder)
        for session_id in [i for i, d in agent.docs.items() if d["metadata"]["directory"] != keep]:
            del agent.docs[session_id]
        client.sync()
        # Their pointers stay (nobody deleted the sessions through the agent), but no
        # pending check or `sync` looks for these folders any more: they are not served.
        roots = {r["path"] for r in client.status()["roots"]}
        assert roots == {agent.folders[keep]}
        client.rescan()
        assert {r["path"] for r in client.status()["roots"]} == {agent.folders[keep]}
        assert_every_answer(client, agent.served(), [keep, doomed], list(agent.docs))
        # The agent saves there again: the folder is served again at once.
        doc = agent.new(doomed)
        agent.save(doc)
        client.sync()
        assert client.resume(doomed)["session_id"] == doc["id"]
        assert_every_answer(client, agent.served(), [keep, doomed], list(agent.docs))


@pytest.fixture
def plain_daemons(base: str) -> Iterator[Callable[[], PlainUserDaemon]]:
    made: list[DaemonProcess] = []

    def make() -> PlainUserDaemon:
        daemon = PlainUserDaemon(base, name=f"plain-{len(made)}")
        made.append(daemon)
        return daemon

    yield make
    finish_all(made)


def test_a_folder_back_from_mode_000_is_read_again_at_once(
    agent: Agent, plain_daemons: Callable[[], PlainUserDaemon]
) -> None:
    keep, locked = agent.workspaces
    agent.save(agent.new(keep))
    first = agent.new(locked)
    agent.save(first)
    daemon = plain_daemons().start()
    assert daemon.proc is not None
    assert modes_apply_to_daemon(daemon), "the daemon can still read mode 000 folders"
    folder = agent.folders[locked]
    with daemon.client() as client:
        client.sync()
        os.chmod(folder, 0)
        try:
            # Saved while it cannot be read: the daemon cannot know it yet.
            second = agent.new(locked)
            agent.save(second)
            client.sync()
            hidden = [os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".json")]
            assert_every_answer(
                client, agent.served(), agent.workspaces, list(agent.docs), hidden=hidden
            )
        finally:
            os.chmod(folder, 0o755)
        # Readable again: `sync` means the folder was read again, no reconcile needed.
        client.sync()
        assert client.resume(locked)["session_id"] == second["id"]
        assert_every_answer(client, agent.served(), agent.workspaces, list(agent.docs))


def test_a_folder_deleted_and_made_again_at_once_never_holds_up_sync(
    agent: Agent, daemons: DaemonFactory
) -> None:
    # `sync` plants its cookie in the folder made again, which no watch covers, while the
    # deleted one is being forgotten. A race: before the fix it hung one `sync` in a hundred
    # or two.
    keep, other = agent.workspaces
    agent.save(agent.new(keep))
    folder = agent.folders[other]
    daemon = daemons().start()
    with daemon.client() as client:
        for _ in range(200):
            doc = agent.new(other)
            agent.save(doc)
            client.sync(timeout=10)
            shutil.rmtree(folder)
            del agent.docs[doc["id"]]
            os.makedirs(folder)
            client.sync(timeout=10)
        assert_every_answer(client, agent.served(), agent.workspaces, [*agent.docs, doc["id"]])
