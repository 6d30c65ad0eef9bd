"""The index follows the folders: saves, new workspaces, deletes, in-place writes, events,
rescans and status counts (docs/protocol.md §5.5, §8, §9)."""

from __future__ import annotations

import json
import os
import queue
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sessionctl import Client, DaemonError, DaemonUnreachable

from tests.support import reference
from tests.support.agent_sim import AgentSim, add_turn, make_workspace, new_session
from tests.support.corpus import agent_env, agent_global_root
from tests.support.daemon import DaemonFactory, DaemonProcess, wait_for

T1 = 1_750_000_000 * 10**9  # explicit mtimes, so the newest file never depends on the clock
SECOND = 10**9


@dataclass
class World:
    """A few workspaces saved into by one agent, and a clock for their mtimes."""

    base: str
    sim: AgentSim
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    workspaces: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    clock: int = T1

    def add_workspace(self, name: str) -> tuple[str, str]:
        workspace, folder = make_workspace(os.path.join(self.base, "ws"), name)
        self.workspaces.append(workspace)
        self.folders.append(folder)
        return workspace, folder

    def folder_of(self, workspace: str) -> str:
        return self.folders[self.workspaces.index(workspace)]

    def save(self, session: dict[str, Any], folder: str | None = None) -> str:
        self.clock += SECOND
        folder = folder or self.folder_of(session["metadata"]["directory"])
        self.sessions[session["id"]] = session
        return self.sim.save(folder, session, mtime_ns=self.clock)

    def new(self, workspace: str, turns: int = 1) -> dict[str, Any]:
        session = new_session(workspace)
        for _ in range(turns):
            add_turn(session, self.rng, 60)
        self.save(session)
        return session

    def folders_served(self) -> list[str]:
        return reference.served_folders(agent_env(self.base))


@pytest.fixture
def world(base: str) -> World:
    world = World(base, AgentSim(agent_global_root(base)))
    for name in ("alpha", "beta", "gamma"):
        workspace, _ = world.add_workspace(name)
        world.new(workspace)
    return world


@pytest.fixture
def daemon(world: World, daemons: DaemonFactory) -> DaemonProcess:
    return daemons().start()


@pytest.fixture
def client(daemon: DaemonProcess) -> Iterator[Client]:
    with daemon.client() as client:
        yield client


def test_save_then_resume_with_sync_sees_it_every_time(world: World, client: Client) -> None:
    # 50 saves over 3 workspaces, alternating a new session and another turn in an older one;
    # each resume with sync: true, sent right after the rename, returns exactly that save.
    for i in range(50):
        workspace = world.workspaces[i % 3]
        if i % 2 == 0:
            session = new_session(workspace)
        else:
            mine = [s for s in world.sessions.values() if s["metadata"]["directory"] == workspace]
            session = min(mine, key=lambda s: len(s["messages"]))  # an older one
            add_turn(session, world.rng, 40)
        path = world.save(session)
        answer = client.resume(workspace, sync=True)
        assert answer["session_id"] == session["id"], f"save {i}"
        assert answer["path"] == path
        assert answer["header"]["mtime_ns"] == world.clock
        assert answer["header"]["message_count"] == len(session["messages"])
        got = client.get(session["id"], window=1, sync=True)
        assert got["session"]["messages"] == session["messages"][-1:]


def test_save_without_sync_is_visible_within_a_second(world: World, client: Client) -> None:
    for i in range(10):
        workspace = world.workspaces[i % 3]
        session = world.new(workspace, turns=0)
        wait_for(
            lambda w=workspace, s=session: client.resume(w)["session_id"] == s["id"],
            timeout=1.0,
            what=f"save {i} seen by resume without sync",
        )


def test_sync_op_returns_after_the_change_and_seq_grows(world: World, client: Client) -> None:
    before = client.ping()["seq"]
    session = world.new(world.workspaces[0])
    synced = client.sync(timeout=10)
    assert synced["seq"] > before
    assert client.get(session["id"])["session_id"] == session["id"]  # no sync flag needed now
    assert client.ping()["seq"] == synced["seq"]  # nothing changed since


def test_new_workspace_is_served_without_a_restart(
    world: World, daemon: DaemonProcess, client: Client
) -> None:
    # A brand-new checkout: its sessions folder and its registry pointer appear after the
    # daemon started. `get` and list-all never ask about a workspace, so only the watched
    # registry can lead the daemon there.
    instance = client.ping()["instance"]
    first_ws, first_folder = world.add_workspace("brand-new")
    session = world.new(first_ws, turns=2)
    assert client.get(session["id"], sync=True)["path"] == os.path.join(
        first_folder, session["id"] + ".json"
    )
    second_ws, second_folder = world.add_workspace("brand-new-too")
    other = world.new(second_ws)
    client.sync()
    listed = {h["id"] for h in client.list()["sessions"]}
    assert {session["id"], other["id"]} <= listed
    assert client.resume(second_ws)["session_id"] == other["id"]
    # And without any sync: the registry is watched, so within a second, like any save.
    third_ws, third_folder = world.add_workspace("brand-new-three")
    third = world.new(third_ws)
    wait_for(
        lambda: any(h["id"] == third["id"] for h in client.list()["sessions"]),
        timeout=1.0,
        what="a session of a new workspace listed without sync",
    )
    roots = {r["path"]: r["sources"] for r in client.status()["roots"]}
    for folder in (first_folder, second_folder, third_folder):
        assert "registry" in roots[folder]
    assert client.ping()["instance"] == instance  # the same daemon, never restarted
    assert len(daemon.events_named("start")) == 1


def test_registry_created_after_the_daemon_started(base: str, daemons: DaemonFactory) -> None:
    # A machine where the agent has never run: no registry folder when the daemon starts.
    # The first save creates it; a read with sync: true sees that save.
    daemon = daemons().start()
    world = World(base, AgentSim(agent_global_root(base)))
    assert not os.path.exists(world.sim.registry)
    workspace, _ = world.add_workspace("first")
    session = world.new(workspace)
    with daemon.client() as client:
        assert client.get(session["id"], sync=True)["session_id"] == session["id"]
        assert client.list(sync=True)["total"] == 1


def test_delete_removes_the_session(world: World, client: Client) -> None:
    workspace = world.workspaces[1]
    older = world.new(workspace)
    newest = world.new(workspace)
    assert client.resume(workspace, sync=True)["session_id"] == newest["id"]
    os.unlink(os.path.join(world.folder_of(workspace), newest["id"] + ".json"))
    assert client.resume(workspace, sync=True)["session_id"] == older["id"]
    with pytest.raises(DaemonError) as caught:
        client.get(newest["id"])
    assert caught.value.code == "not_found"
    assert newest["id"] not in {h["id"] for h in client.list(workspace)["sessions"]}
    for session_id in [
        s for s, d in world.sessions.items() if d["metadata"]["directory"] == workspace
    ]:
        path = os.path.join(world.folder_of(workspace), session_id + ".json")
        if os.path.exists(path):
            os.unlink(path)
    with pytest.raises(DaemonError) as caught:
        client.resume(workspace, sync=True)
    assert caught.value.code == "not_found"


def test_in_place_codex_write_is_picked_up(world: World, client: Client) -> None:
    workspace = world.workspaces[2]
    folder = world.folder_of(workspace)
    codex = new_session(workspace, session_id="codex-rollout-1")
    add_turn(codex, world.rng, 50)
    path = world.sim.import_codex(folder, codex)  # pretty JSON, written in place
    answer = client.resume(workspace, window=100, sync=True)
    assert answer["session_id"] == codex["id"]
    assert answer["session"]["messages"] == codex["messages"]
    # Imported again with more turns: the same file rewritten in place (no rename).
    inode = os.stat(path).st_ino
    add_turn(codex, world.rng, 50)
    world.sim.import_codex(folder, codex)
    assert os.stat(path).st_ino == inode
    again = client.get(codex["id"], window=3, sync=True)
    assert again["header"]["message_count"] == 8
    assert again["session"]["messages"] == codex["messages"][-3:]
    assert again["file_bytes"] == os.path.getsize(path)


def test_a_file_turned_to_garbage_is_not_served(world: World, client: Client) -> None:
    # Its last good header must not be served as if it were current.
    workspace = world.workspaces[0]
    older = world.new(workspace)
    newest = world.new(workspace)
    path = os.path.join(world.folder_of(workspace), newest["id"] + ".json")
    assert client.resume(workspace, sync=True)["session_id"] == newest["id"]
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)
    assert client.resume(workspace, sync=True)["session_id"] == older["id"]
    with pytest.raises(DaemonError):
        client.get(newest["id"])
    world.save(newest)  # saved whole again
    assert client.resume(workspace, sync=True)["session_id"] == newest["id"]


def test_touching_an_older_file_makes_it_the_one_to_resume(world: World, client: Client) -> None:
    # Resume order is the file's mtime, whatever changed it.
    workspace = world.workspaces[0]
    older = world.new(workspace)
    world.new(workspace)
    world.clock += SECOND
    path = os.path.join(world.folder_of(workspace), older["id"] + ".json")
    os.utime(path, ns=(world.clock, world.clock))
    answer = client.resume(workspace, sync=True)
    assert answer["session_id"] == older["id"]
    assert answer["header"]["mtime_ns"] == world.clock


def strip(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "ok"}


def read_event(sock: socket.socket, buffer: bytearray) -> dict[str, Any]:
    while b"\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("the watch stream ended")
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    event = json.loads(line)
    assert isinstance(event, dict)
    return event


def next_event_for(
    sock: socket.socket, buffer: bytearray, session_id: str, kind: str
) -> dict[str, Any]:
    """Read events (the socket has a timeout) until `kind` for `session_id` arrives."""
    while True:
        event = read_event(sock, buffer)
        if event.get("event") == kind and event.get("session_id") == session_id:
            return event


def test_watch_streams_saves_and_removals(world: World, daemon: DaemonProcess) -> None:
    workspace = world.workspaces[0]
    with daemon.connect_raw(timeout=10) as sock:
        sock.sendall(b'{"op":"watch","req":"w1"}\n')
        buffer = bytearray()
        assert read_event(sock, buffer) == {"ok": True, "req": "w1"}
        for _ in range(3):
            session = world.new(workspace)
            path = os.path.join(world.folder_of(workspace), session["id"] + ".json")
            saved = next_event_for(sock, buffer, session["id"], "session_saved")
            assert saved["path"] == path
        os.unlink(path)
        removed = next_event_for(sock, buffer, session["id"], "session_removed")
        assert removed["path"] == path


def test_watch_through_the_library(world: World, daemon: DaemonProcess) -> None:
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    subscribed = threading.Event()

    def follow() -> None:
        watcher = daemon.client(timeout=10).watch()
        try:
            for event in watcher:
                subscribed.set()
                events.put(event)
        except DaemonUnreachable:
            pass  # the daemon stopped at the end of the test

    # The stream has no "subscribed" message of its own; a first save shows it is flowing.
    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    workspace = world.workspaces[1]
    deadline = time.monotonic() + 10
    while not subscribed.is_set():
        assert time.monotonic() < deadline, "no event reached the watch stream"
        world.new(workspace)
        subscribed.wait(0.2)
    session = world.new(workspace)
    while True:
        event = events.get(timeout=10)
        if event["session_id"] == session["id"]:
            break
    assert event["event"] == "session_saved"
    assert event["directory"] == workspace


def test_rescan_returns_counts(world: World, daemon: DaemonProcess, client: Client) -> None:
    count = len(world.sessions)
    assert strip(client.rescan()) == {
        "added": 0,
        "updated": 0,
        "removed": 0,
        "unchanged": count,
        "invalid": 0,
    }
    # A write through a hard link in a folder nobody watches changes a session without any
    # event in its own folder: only a rescan can see it.
    session = world.sessions[next(iter(world.sessions))]
    path = os.path.join(world.folder_of(session["metadata"]["directory"]), session["id"] + ".json")
    hidden = os.path.join(world.base, "unwatched")
    os.makedirs(hidden)
    os.link(path, os.path.join(hidden, "same-file.json"))
    add_turn(session, world.rng, 30)
    with open(os.path.join(hidden, "same-file.json"), "wb") as fh:
        fh.write(json.dumps(session, separators=(",", ":"), ensure_ascii=False).encode())
    # The precondition of this test: the watcher cannot see that change.
    assert client.get(session["id"], sync=True)["header"]["message_count"] == 4
    counts = strip(client.rescan())
    assert counts == {"added": 0, "updated": 1, "removed": 0, "unchanged": count - 1, "invalid": 0}
    assert client.get(session["id"])["header"]["message_count"] == 8
    assert client.status()["rescans"] >= 2
    assert len(daemon.events_named("rescan")) >= 2


def test_status_counts(world: World, client: Client) -> None:
    extra_ws, _ = world.add_workspace("delta")
    world.new(extra_ws)
    world.new(world.workspaces[0])
    client.sync()
    status = client.status()
    folders = world.folders_served()
    sessions = reference.sessions_in(folders)
    assert status["sessions"] == len(sessions) == len(world.sessions) == 5
    assert status["workspaces"] == 4
    assert status["instance"] == client.ping()["instance"]
    assert status["uptime_s"] >= 0
    per_root = {r["path"]: r["sessions"] for r in status["roots"]}
    assert per_root == {f: len(reference.sessions_in([f])) for f in folders}
    for key in ("pending", "in_flight", "uploaded", "failed", "last_error"):
        assert key in status["uploads"]
    assert isinstance(status["rescans"], int) and isinstance(status["overflows"], int)
    assert status["memory"]["rss_bytes"] > 0
