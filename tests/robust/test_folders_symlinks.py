"""Folders replaced by symlinks, and symlinks retargeted: what a path leads to is judged again
when the folder reappears, at `rescan` and at the periodic reconcile."""

from __future__ import annotations

import os

import pytest

from tests.support import reference
from tests.support.corpus import agent_env
from tests.support.daemon import DaemonFactory, wait_for
from tests.support.robust import Agent, agent_with, assert_every_answer, config_args


@pytest.fixture
def agent(base: str) -> Agent:
    return agent_with(base, {"a": (1,), "b": (1,)})


@pytest.mark.parametrize("source", ["registry", "config"])
@pytest.mark.parametrize(
    "replacement", ["symlink to the moved folder", "symlink elsewhere", "folder again"]
)
def test_a_folder_replaced_at_its_path_is_served_again(
    agent: Agent, daemons: DaemonFactory, replacement: str, source: str
) -> None:
    # A folder no workspace's question finds (asking would serve the folder lazily): one the
    # registry names (an agent run with CODETETHER_DATA_DIR), or one configured.
    workspace = agent.workspaces[0]
    folder = os.path.join(agent.base, "data", "sessions")
    agent.folders[workspace] = folder
    agent.sim.write_pointer = source == "registry"
    agent.save(agent.new(workspace))
    configured = [folder] if source == "config" else []

    def served() -> list[str]:
        env = agent_env(agent.base)
        return reference.served_folders(env, sessions_dirs=configured, asked=agent.workspaces)

    moved = folder + ".moved"
    daemon = daemons(sessions_dirs=configured).start()
    with daemon.client() as client:
        client.sync()
        os.rename(folder, moved)
        client.sync()  # the folder is gone: its sessions with it
        assert_every_answer(client, served(), agent.workspaces, list(agent.docs))
        if replacement == "symlink to the moved folder":
            os.symlink(moved, folder)
        elif replacement == "symlink elsewhere":
            elsewhere = os.path.join(agent.base, "elsewhere", "sessions")
            os.makedirs(elsewhere)
            agent.sim.write_pointer = False  # only the symlink leads there
            agent.save(agent.new(workspace), folder=elsewhere)
            os.symlink(elsewhere, folder)
        else:
            os.makedirs(folder)
            agent.sim.write_pointer = False  # no new pointer: the old ones name it
            agent.save(agent.new(workspace))
        client.sync()
        assert_every_answer(client, served(), agent.workspaces, list(agent.docs))
        # Saves through the new path are seen, as every save is.
        doc = agent.new(workspace)
        agent.save(doc)
        client.sync()
        assert client.resume(workspace)["session_id"] == doc["id"]
        client.rescan()
        assert_every_answer(client, served(), agent.workspaces, list(agent.docs))


@pytest.mark.parametrize("when", ["rescan", "periodic reconcile"])
def test_a_retargeted_symlink_in_a_sessions_directory_is_followed(
    agent: Agent, daemons: DaemonFactory, when: str
) -> None:
    a, b = agent.workspaces
    link = os.path.join(agent.base, "ws", "current")
    os.symlink(a, link)
    doc = agent.new(link)  # a session started in the workspace through the symlink
    agent.folders[link] = agent.folders[a]
    agent.save(doc)
    args = (
        config_args(agent.base, "fast", {"reconcile_interval_s": 0.5}) if when != "rescan" else []
    )
    daemon = daemons(extra_args=args).start()
    with daemon.client() as client:
        client.sync()
        assert client.resume(a, sync=True)["session_id"] == doc["id"]
        os.unlink(link)
        os.symlink(b, link)
        if when == "rescan":
            client.rescan()
        else:
            wait_for(
                lambda: doc["id"] in [s["id"] for s in client.list(b)["sessions"]],
                timeout=20,
                what="the reconcile to follow the retargeted symlink",
            )
        assert client.resume(b, sync=True)["session_id"] == doc["id"]
        assert_every_answer(client, agent.served(), [a, b, link], list(agent.docs))
