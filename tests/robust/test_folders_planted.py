"""Planted sessions and folders nobody names (README, "What it serves"): a folder served only
because a workspace was asked about answers only the workspaces whose sessions folder it is; a
folder no source names any more is not served; registry pointers naming no sessions folder are
not followed."""

from __future__ import annotations

import os
import signal

from tests.support import reference
from tests.support.corpus import agent_env
from tests.support.daemon import DaemonFactory, wait_for
from tests.support.robust import Agent, assert_every_answer, expect_not_found


def plant(agent: Agent, clone: str, victim: str) -> str:
    """A session committed in the clone's sessions folder, claiming the victim's workspace,
    newer than anything the victim has. No pointer names it: nobody ran the agent there."""
    agent.sim.write_pointer = False
    try:
        doc = agent.new(victim, turns=2)
        agent.save(doc, folder=agent.folders[clone])
    finally:
        agent.sim.write_pointer = True
    return doc["id"]


def test_a_session_planted_in_a_cloned_repository_never_wins_another_workspace(
    base: str, daemons: DaemonFactory
) -> None:
    agent = Agent(base, os.path.join(base, "ws"))
    victim = agent.add_workspace("victim")
    sub = os.path.join(victim, "src")
    os.makedirs(sub)
    clone = agent.add_workspace("clone")
    own = agent.new(victim)
    agent.save(own)
    planted = plant(agent, clone, victim)
    planted_sub = plant(agent, clone, sub)
    clones_own = agent.new(clone)
    agent.sim.write_pointer = False
    agent.save(clones_own)  # the clone's own committed session: it answers for the clone
    agent.sim.write_pointer = True
    daemon = daemons().start()
    env = agent_env(base)
    with daemon.client() as client:
        # Asking about the clone serves its folder; its planted sessions still must not win
        # for the victim (nor for a subfolder of it), before or after a rescan.
        assert client.resume(clone, sync=True)["session_id"] == clones_own["id"]
        for _ in range(2):
            for workspace in (victim, sub):
                expected = reference.resume(
                    reference.served_folders(env, asked=[workspace]), workspace
                )
                got = client.resume(workspace, sync=True) if expected else None
                if expected is None:
                    expect_not_found(client.resume, workspace, sync=True)
                else:
                    assert got is not None and got["session_id"] == expected["session_id"]
                    assert got["session_id"] not in (planted, planted_sub)
                listing = client.list(workspace)
                assert planted not in [s["id"] for s in listing["sessions"]]
                assert planted_sub not in [s["id"] for s in listing["sessions"]]
            client.rescan()
        # The clone's folder still serves what it holds to everyone who asks by id.
        assert client.get(planted)["session_id"] == planted
        # Once the agent has saved there (a pointer names the folder), it is the agent's own
        # folder: its sessions answer as any others do.
        agent.save(agent.docs[planted], folder=agent.folders[clone], turn=True)
        client.sync()
        assert client.resume(victim, sync=True)["session_id"] == planted
        assert_every_answer(client, agent.served(), [victim, sub, clone], list(agent.docs))


def test_folders_no_source_names_any_more_are_dropped(base: str, daemons: DaemonFactory) -> None:
    agent = Agent(base, os.path.join(base, "ws"))
    kept = agent.add_workspace("kept")
    asked = agent.add_workspace("asked")
    withdrawn = agent.add_workspace("withdrawn")
    for workspace in (kept, withdrawn):
        agent.save(agent.new(workspace))
    agent.sim.write_pointer = False
    agent.save(agent.new(asked))
    agent.sim.write_pointer = True
    daemon = daemons(name="first").start()
    with daemon.client() as client:
        client.resume(asked, sync=True)  # served lazily, for this run only
        roots = {r["path"] for r in client.status()["roots"]}
        assert agent.folders[asked] in roots and agent.folders[withdrawn] in roots
    daemon.stop()
    # The withdrawn workspace's pointers go (its sessions were deleted by the agent, which
    # removes pointers; the folder itself stays with a file nobody points to).
    for name in os.listdir(agent.sim.registry):
        with open(os.path.join(agent.sim.registry, name)) as fh:
            if fh.read().startswith(agent.folders[withdrawn]):
                os.unlink(os.path.join(agent.sim.registry, name))
    again = daemons(name="first").start()  # the same state folder: the last run's cache
    with again.client() as client:
        client.sync()
        roots = {r["path"] for r in client.status()["roots"]}
        assert agent.folders[kept] in roots
        assert agent.folders[withdrawn] not in roots, "a folder of the last run nobody names"
        assert agent.folders[asked] not in roots, "asked about last run, not in this one"
        env = agent_env(base)
        folders = reference.served_folders(env)  # the registry's folders only
        assert_every_answer(client, folders, [kept], [])
        # A pointer removed while running: gone from the served folders at the next reconcile.
        for name in os.listdir(agent.sim.registry):
            os.unlink(os.path.join(agent.sim.registry, name))
        client.rescan()
        assert agent.folders[kept] not in {r["path"] for r in client.status()["roots"]}
        assert_every_answer(client, [], [], [])


def test_pointers_to_system_folders_are_not_followed(base: str, daemons: DaemonFactory) -> None:
    agent = Agent(base, os.path.join(base, "ws"))
    workspace = agent.add_workspace("w")
    agent.save(agent.new(workspace))
    for n, target in enumerate(("/x.json", "/etc/passwd.json", "/etc/x/y.json")):
        with open(os.path.join(agent.sim.registry, f"evil{n}.path"), "w") as fh:
            fh.write(target)
    daemon = daemons().start()
    with daemon.client() as client:
        client.sync()
        # A pointer written while running is not followed either.
        with open(os.path.join(agent.sim.registry, "evil9.path"), "w") as fh:
            fh.write("/etc/hosts.json")
        client.sync()
        client.rescan()
        roots = {r["path"] for r in client.status()["roots"]}
        assert roots == {agent.folders[workspace]}
        assert not [n for n in os.listdir("/etc") if n.startswith(".sessiond-cookie-")]
        assert_every_answer(client, agent.served(), agent.workspaces, list(agent.docs))


def test_a_folder_taken_out_of_the_config_is_dropped_at_reload(
    base: str, daemons: DaemonFactory
) -> None:
    agent = Agent(base, os.path.join(base, "ws"))
    agent.sim.write_pointer = False
    kept, removed = (agent.add_workspace(n) for n in ("kept", "removed"))
    for workspace in (kept, removed):
        agent.save(agent.new(workspace))
    folders = [agent.folders[kept], agent.folders[removed]]
    config = os.path.join(base, "sessiond.toml")
    with open(config, "w") as fh:
        fh.write(f"sessions_dirs = {folders!r}\ndiscover = false\n".replace("'", '"'))
    daemon = daemons(extra_args=["--config", config]).start()
    with daemon.client() as client:
        client.sync()
        assert {r["path"] for r in client.status()["roots"]} == set(folders)
        with open(config, "w") as fh:
            fh.write(f'sessions_dirs = ["{folders[0]}"]\ndiscover = false\n')
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.events_named("root_dropped"), 15, "the reload to drop it")
        client.sync()
        assert {r["path"] for r in client.status()["roots"]} == {folders[0]}
        ids = [d["id"] for d in agent.docs.values()]
        assert_every_answer(client, folders[:1], [kept, removed], ids)
