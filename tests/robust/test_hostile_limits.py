"""Exhausted limits: a flood of connections under a lowered open-files limit never takes the
descriptors the indexer needs, so no save is lost, and every answer afterwards is the cold
scan's.
"""

from __future__ import annotations

import os
import socket
import threading
from collections import deque

from tests.support.daemon import DaemonProcess, finish_all, wait_for
from tests.support.robust import Agent, OpenFilesDaemon, admitted_client, assert_every_answer

NOFILE = 200  # soft and hard: the daemon cannot raise it, so its cap is 200 - 128 = 72
HELD = 600  # connections the flood keeps open at once (the test process allows many more)
SAVES = 40


class Flood:
    """A neighbour that connects as fast as it can and never sends a byte, keeping the newest
    `HELD` connections open: every place under the cap is taken, and the backlog stays full."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._stop = threading.Event()
        self.connects = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        held: deque[socket.socket] = deque()
        try:
            while not self._stop.is_set():
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.setblocking(False)
                try:
                    sock.connect(self._path)
                except OSError:  # the backlog is full (EAGAIN): try again
                    sock.close()
                    continue
                held.append(sock)
                self.connects += 1
                if len(held) > HELD:
                    held.popleft().close()
        finally:
            for sock in held:
                sock.close()


def fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_connection_flood_under_a_low_open_files_limit_loses_no_save(base: str) -> None:
    agent = Agent(base, os.path.join(base, "ws"))
    for name in ("alpha", "beta"):
        workspace = agent.add_workspace(name)
        agent.save(agent.new(workspace, 1))
    made: list[DaemonProcess] = []
    try:
        daemon = OpenFilesDaemon(base, soft=NOFILE, hard=NOFILE, name="flooded")
        made.append(daemon)
        daemon.allowed_errors.add("accept_paused")
        daemon.start()
        assert daemon.proc is not None
        most_fds = 0
        with Flood(daemon.socket_path) as flood:
            for i in range(SAVES):
                # Each save lands while the flood is connecting: a few more connects first.
                target = flood.connects + 50
                wait_for(lambda t=target: flood.connects >= t, 30, "the flood to go on")
                workspace = agent.workspaces[i % 2]
                agent.save(agent.new(workspace, 1 + i % 3))
                most_fds = max(most_fds, fds_of(daemon.proc.pid))
            total = flood.connects
        print(f"\nflood: {total} connects, at most {most_fds} of {NOFILE} descriptors in use")

        with wait_for(
            lambda: admitted_client(daemon), 30, "a place for the checking client"
        ) as client:
            client.sync(timeout=30)
            lost = [sid for sid in agent.docs if _header_or_none(client, sid) is None]
            print(f"saves lost under descriptor exhaustion: {len(lost)} of {len(agent.docs)}")
            assert not lost
            assert_every_answer(client, agent.served(), agent.workspaces, list(agent.docs))
        deferred = daemon.events_named("session_read_deferred")
        print(f"reads deferred: {len(deferred)}")
        assert most_fds < NOFILE
    finally:
        finish_all(made)


def _header_or_none(client: object, session_id: str) -> object:
    try:
        return client.get(session_id)["header"]  # type: ignore[attr-defined]
    except Exception:
        return None
