"""Smaller hostile cases: a session file rewritten between indexing and a windowed read (the
answer must still answer the question asked), integers of any size in requests, and
duplicate keys and out-of-range times judged as the agent's parser judges them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from sessionctl import Client

from tests.support import reference
from tests.support.agent_sim import compact
from tests.support.compare import assert_answer
from tests.support.daemon import DaemonFactory
from tests.support.robust import Agent, assert_every_answer, expect_not_found


def rewrite_unseen(agent: Agent, path: str, doc: dict, outside: str) -> None:
    """Rewrite the file at `path` in place with `doc`, through a hard link in a folder no one
    watches: the inode changes, but no event reaches the daemon's watch of `path`'s folder."""
    os.makedirs(outside, exist_ok=True)
    link = os.path.join(outside, os.path.basename(path))
    os.link(path, link)
    with open(link, "r+b") as fh:
        fh.truncate(0)
        fh.write(compact(doc))
    os.utime(link, ns=(agent.tick(), agent.clock))
    os.unlink(link)


def test_a_file_rewritten_with_another_workspaces_session_is_not_served_for_this_one(
    base: str, daemons: DaemonFactory
) -> None:
    agent = Agent(base, os.path.join(base, "ws"))
    alpha, beta = agent.add_workspace("alpha"), agent.add_workspace("beta")
    older = agent.save(agent.new(alpha, 1))
    newest = agent.save(agent.new(alpha, 2))
    agent.save(agent.new(beta, 1))
    fetched = agent.save(agent.new(beta, 3))
    daemon = daemons().start()
    with daemon.client() as client:
        client.sync(timeout=20)
        assert client.resume(alpha)["path"] == newest
        # alpha's newest file now holds a session of beta; no event told the daemon.
        intruder = agent.new(beta, 2)
        agent.stamp(intruder)
        rewrite_unseen(agent, newest, intruder, os.path.join(base, "outside"))
        answer_is_cold_scans(client, agent, alpha, window=1)
        assert client.resume(alpha, window=1)["path"] == older
        # `get` of an id whose file now holds another session: not found, as the agent says.
        fetched_id = os.path.basename(fetched).removesuffix(".json")
        rewrite_unseen(agent, fetched, agent.new(alpha, 1), os.path.join(base, "outside2"))
        expect_not_found(client.get, fetched_id, window=1)
        assert_every_answer(client, agent.served(), agent.workspaces, [fetched_id], window=1)


def answer_is_cold_scans(client: Client, agent: Agent, workspace: str, window: int) -> None:
    expected = reference.Snapshot(agent.served()).resume(workspace, window)
    assert expected is not None
    assert_answer(client.resume(workspace, window=window), expected)


def test_times_are_judged_by_chronos_range_not_pythons(base: str, daemons: DaemonFactory) -> None:
    agent = Agent(base, os.path.join(base, "ws"))
    alpha = agent.add_workspace("alpha")
    agent.save(agent.new(alpha, 1))
    cases = {
        # chrono loads these (Python's datetime could not hold year 0 or year 10000):
        "year-zero": ("0000-01-01T00:00:00Z", True),
        "year-zero-with-offset": ("0000-01-01T00:30:00+01:00", True),
        "into-year-10000": ("9999-12-31T23:59:59-01:00", True),
        "ten-fraction-digits": ("2026-01-01T00:00:00.1234567891Z", True),
        # and refuses these (the old check let them through):
        "second-61": ("2026-01-01T00:00:61Z", False),
        "offset-24-hours": ("2026-01-01T00:00:00+24:00", False),
    }
    made = {}
    for name, (text, _) in cases.items():
        doc = agent.new(alpha, 1)
        doc["created_at"] = text
        path = agent.save(doc)  # save() stamps updated_at; set it too for the second half
        with open(path, "rb") as fh:
            raw = fh.read()
        updated = doc["updated_at"]
        raw = raw.replace(f'"updated_at":"{updated}"'.encode(), f'"updated_at":"{text}"'.encode())
        with open(path, "wb") as fh:
            fh.write(raw)
        os.utime(path, ns=(agent.tick(), agent.clock))
        doc["updated_at"] = text
        made[name] = doc["id"]
    daemon = daemons().start()
    with daemon.client() as client:
        client.sync(timeout=20)
        for name, (_, loadable) in cases.items():
            if loadable:
                assert client.get(made[name])["header"]["updated_at"] == cases[name][0], name
            else:
                expect_not_found(client.get, made[name])
        for window in (None, 1):
            assert_every_answer(client, agent.served(), agent.workspaces, list(agent.docs), window)


def test_fields_given_twice_are_judged_as_serde_judges_them(
    base: str, daemons: DaemonFactory
) -> None:
    agent = Agent(base, os.path.join(base, "ws"))
    alpha, beta = agent.add_workspace("alpha"), agent.add_workspace("beta")
    agent.save(agent.new(alpha, 1))
    agent.save(agent.new(beta, 1))

    def plant(workspace: str, edit: Callable[[bytes], bytes], pretty: bool = False) -> str:
        doc = agent.new(workspace, 2)
        agent.stamp(doc)
        data = json.dumps(doc, indent=1).encode() if pretty else compact(doc)
        path = os.path.join(agent.folders[workspace], f"{doc['id']}.json")
        with open(path, "wb") as fh:
            fh.write(edit(data))
        os.utime(path, ns=(agent.tick(), agent.clock))
        agent.docs[doc["id"]] = doc
        return doc["id"]

    # Refused by the agent (a struct field twice): the newest file of alpha must not win.
    refused = [
        plant(alpha, lambda d: d[:-1] + b',"agent":"plan"}'),
        plant(alpha, lambda d: d.replace(b'"metadata":{', b'"metadata":{"shared":true,', 1)),
        plant(beta, lambda d: d[:-1] + b', "title": "again"}', pretty=True),
        plant(beta, lambda d: d[:-1] + b',"metadata":{"directory":"/elsewhere","shared":false}}'),
    ]  # fmt: skip
    # Loaded by the agent: a key it does not know, given twice, is ignored.
    loaded = plant(alpha, lambda d: d[:-1] + b',"extra":1,"extra":2}')
    daemon = daemons().start()
    with daemon.client() as client:
        client.sync(timeout=20)
        for session_id in refused:
            expect_not_found(client.get, session_id)
        assert client.resume(alpha)["session_id"] == loaded
        for window in (None, 1):
            assert_every_answer(client, agent.served(), agent.workspaces, list(agent.docs), window)
