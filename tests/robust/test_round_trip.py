"""The server's per-connection deadlines and write-back, as a client on a real socket sees them.

The idle and partial-line deadlines are one lazily moved timer per connection: a request pushes
the idle deadline later without touching the timer, which re-arms itself when it fires early;
a partial line pulls it earlier at once. Replies are drained only above the write buffer's
high-water mark. These tests pin what that must not change (the first cases are in
tests/robust/test_socket.py).
"""

from __future__ import annotations

import json
import random
import socket
import time
from typing import Any

import pytest

from tests.support.agent_sim import add_turn
from tests.support.daemon import DaemonFactory, DaemonProcess
from tests.support.raw_socket import PING, closed, read_reply
from tests.support.robust import Agent, agent_with, config_args


@pytest.fixture
def agent(base: str) -> Agent:
    return agent_with(base, {"alpha": (2,)})


def reply(sock: socket.socket) -> dict[str, Any]:
    answer = read_reply(sock)
    assert answer is not None, "the daemon closed the connection instead of answering"
    return answer


def assert_open_for(sock: socket.socket, seconds: float) -> None:
    """Nothing arrives and the connection stays open for `seconds` (also the test's pace)."""
    sock.settimeout(seconds)
    try:
        data = sock.recv(1)
    except TimeoutError:
        return
    finally:
        sock.settimeout(10)
    raise AssertionError("closed" if data == b"" else f"unexpected bytes {data!r}")


def daemon_with(agent: Agent, daemons: DaemonFactory, settings: dict[str, float]) -> DaemonProcess:
    return daemons(extra_args=config_args(agent.base, "limits", settings)).start()


def test_a_busy_connection_outlives_the_idle_timeout_and_is_closed_once_idle(
    agent: Agent, daemons: DaemonFactory
) -> None:
    daemon = daemon_with(agent, daemons, {"idle_timeout_s": 0.5})
    with daemon.connect_raw(timeout=10) as sock:
        started = time.monotonic()
        while time.monotonic() - started < 1.5:  # three idle timeouts, never idle for one
            sock.sendall(PING)
            assert reply(sock)["ok"] is True
            assert_open_for(sock, 0.1)
        idle_since = time.monotonic() - 0.1
        assert closed(sock), "an idle connection was kept"
        assert 0.45 <= time.monotonic() - idle_since < 5
    timeouts = daemon.events_named("connection_timeout")
    assert [t["partial_line"] for t in timeouts] == [False]


def test_once_a_partial_line_is_finished_the_idle_timeout_applies_again(
    agent: Agent, daemons: DaemonFactory
) -> None:
    daemon = daemon_with(agent, daemons, {"partial_line_timeout_s": 0.3, "idle_timeout_s": 1.2})
    with daemon.connect_raw(timeout=10) as sock:
        sock.sendall(b'{"op":')
        assert_open_for(sock, 0.1)  # the daemon reads the first half on its own
        sock.sendall(b'"ping"}\n')
        assert reply(sock)["ok"] is True
        answered = time.monotonic()
        assert closed(sock)
        # Not at the partial line's deadline (0.3 s after its first byte): at the idle one.
        assert 1.1 <= time.monotonic() - answered < 6
    timeouts = daemon.events_named("connection_timeout")
    assert [t["partial_line"] for t in timeouts] == [False]


def test_a_partial_line_after_requests_is_cut_at_its_own_deadline(
    agent: Agent, daemons: DaemonFactory
) -> None:
    # The idle deadline (600 s) was pushed on by every request; the partial line's is earlier.
    daemon = daemon_with(agent, daemons, {"partial_line_timeout_s": 0.5})
    with daemon.connect_raw(timeout=10) as sock:
        for _ in range(3):
            sock.sendall(PING)
            assert reply(sock)["ok"] is True
        sock.sendall(b'{"op":"pi')
        started = time.monotonic()
        assert closed(sock)
        assert 0.45 <= time.monotonic() - started < 5
    timeouts = daemon.events_named("connection_timeout")
    assert [t["partial_line"] for t in timeouts] == [True]


def test_pipelined_replies_beyond_the_write_buffer_come_back_whole_and_in_order(
    agent: Agent, daemons: DaemonFactory
) -> None:
    doc = agent.new(agent.workspaces[0], 1)
    rng = random.Random(3)
    for _ in range(150):
        add_turn(doc, rng, 2000)
    agent.save(doc)
    daemon = daemons().start()
    windows = [40 + 10 * i for i in range(40)]  # replies of ~0.1-1 MB: megabytes pipelined
    requests = [
        {"op": "get", "id": doc["id"], "window": w, "sync": True, "req": i}
        for i, w in enumerate(windows)
    ]
    with daemon.connect_raw(timeout=30) as sock:
        sock.sendall(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
        with sock.makefile("rb") as stream:
            for i, window in enumerate(windows):
                answer = json.loads(stream.readline())
                assert answer["ok"] is True and answer["req"] == i
                assert answer["session"]["messages"] == doc["messages"][-window:]
        sock.sendall(PING)  # and the connection is still good
        assert reply(sock)["ok"] is True
