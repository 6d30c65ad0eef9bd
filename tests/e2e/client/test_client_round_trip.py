"""sessionctl.Client against a real daemon: how it reads replies and keeps its reply timeout.

The client receives into one reusable buffer that grows for a large reply and shrinks back
after it, decodes lines in place, and calls settimeout() only when the timeout already set would
not end the next call at its deadline. These tests pin what that must not change.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import threading
import time
from typing import Any

import pytest
from sessionctl import Client, DaemonUnreachable
from sessionctl.client import RECV_BYTES

from tests.support.agent_sim import add_turn
from tests.support.daemon import DaemonProcess
from tests.support.robust import Agent


def test_large_replies_arrive_whole_and_the_buffer_shrinks_after_them(
    agent: Agent, daemon: DaemonProcess
) -> None:
    workspace = agent.add_workspace("big")
    doc = agent.new(workspace, 1)
    rng = random.Random(11)
    for _ in range(600):  # ~5 MB of mixed ASCII and multi-byte text: many chunks per reply
        add_turn(doc, rng, 2000)
    agent.save(doc)
    with daemon.client() as client:
        small = client.resume(agent.workspaces[0], sync=True)
        for window in (2400, 7, 1000):
            answer = client.resume(workspace, window=window, sync=True)
            assert answer["session_id"] == doc["id"]
            assert answer["session"]["messages"] == doc["messages"][-window:]
            assert answer["session"]["tool_uses"] == doc["tool_uses"][-window:]
            assert client.resume(agent.workspaces[0]) == small
            conn = client._conn
            assert conn is not None and len(conn._buf) == RECV_BYTES  # the big buffer let go


def test_several_lines_in_one_chunk_are_each_returned(agent: Agent, daemon: DaemonProcess) -> None:
    # A burst of saves: the watch stream's events come several to a recv.
    workspace = agent.workspaces[0]
    events: queue.Queue[dict[str, Any] | None] = queue.Queue()
    watcher = daemon.client(timeout=10).watch()

    def follow() -> None:
        try:
            for event in watcher:
                events.put(event)
        except DaemonUnreachable:
            events.put(None)  # the daemon stopped at the end of the test

    threading.Thread(target=follow, daemon=True).start()
    saved = [agent.save(agent.new(workspace, 1)) for _ in range(40)]
    unseen = set(saved)
    while unseen:
        event = events.get(timeout=10)
        assert event is not None, "the stream ended early"
        if event.get("event") == "session_saved":
            unseen.discard(event["path"])


def test_the_reply_timeout_holds_on_a_kept_connection(daemon: DaemonProcess) -> None:
    assert daemon.proc is not None
    with Client(socket=daemon.socket_path, timeout=0.5) as client:
        for _ in range(200):  # a steady state: the timeout set is kept from call to call
            assert client.ping()["ok"] is True
        os.kill(daemon.proc.pid, signal.SIGSTOP)  # a daemon that does not answer
        try:
            started = time.monotonic()
            with pytest.raises(DaemonUnreachable, match="in time"):
                client.ping()
            waited = time.monotonic() - started
        finally:
            os.kill(daemon.proc.pid, signal.SIGCONT)
        assert 0.5 <= waited < 1.5, waited
        assert client.ping()["ok"] is True  # on a new connection
    with Client(socket=daemon.socket_path, timeout=None) as client:
        assert client.ping()["ok"] is True  # no timeout at all
