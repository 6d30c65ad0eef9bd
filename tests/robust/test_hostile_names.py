"""Session files whose names are not valid UTF-8: no JSON answer can carry such a name, so the
daemon skips them with a log line, answers everything else as the cold scan does (which skips
them too), and a SIGTERM still ends in a clean stop: exit 0, socket removed, header cache
saved.
"""

from __future__ import annotations

import os

from tests.support.agent_sim import compact
from tests.support.daemon import DaemonFactory
from tests.support.robust import Agent, assert_every_answer


def plant(agent: Agent, workspace: str, raw_name: bytes) -> str:
    """A valid session of `workspace`, newest of its folder, under a name that is not UTF-8."""
    doc = agent.new(workspace, 2)
    agent.stamp(doc)
    path = os.fsencode(agent.folders[workspace]) + b"/" + raw_name
    with open(path, "wb") as fh:
        fh.write(compact(doc))
    os.utime(path, ns=(agent.tick(), agent.clock))
    return doc["id"]


def test_undecodable_names_are_skipped_and_a_stop_still_completes(
    base: str, daemons: DaemonFactory
) -> None:
    agent = Agent(base, os.path.join(base, "ws"))
    for name in ("alpha", "beta"):
        workspace = agent.add_workspace(name)
        agent.save(agent.new(workspace, 1))
    alpha, beta = agent.workspaces
    early = plant(agent, alpha, b"\xff\xfe-early.json")  # there at the first crawl
    daemon = daemons()
    daemon.start()
    with daemon.client() as client:
        late = plant(agent, beta, b"late-\xc3\x28.json")  # appears while serving
        agent.save(agent.new(alpha, 3))
        client.sync(timeout=20)
        for window in (None, 1):
            assert_every_answer(
                client, agent.served(), agent.workspaces, [*agent.docs, early, late], window
            )
        assert client.status()["sessions"] == len(agent.docs)
        client.rescan()
        assert_every_answer(client, agent.served(), agent.workspaces, list(agent.docs))
    skipped = daemon.events_named("session_name_undecodable")
    assert len(skipped) == 2, skipped
    cache = os.path.join(daemon.state_dir, "headers.msgpack")
    before = os.stat(cache).st_mtime_ns if os.path.exists(cache) else None
    agent.save(agent.new(beta, 2))
    with daemon.client() as client:
        client.sync(timeout=20)
    assert daemon.stop() == 0
    assert not os.path.exists(daemon.socket_path)
    assert os.stat(cache).st_mtime_ns != before  # the stop saved the header cache
    assert daemon.events_named("stop")
