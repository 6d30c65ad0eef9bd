"""Hostile and careless clients: a cap on connections with a clear error, idle and unfinished
requests closed in time, an open-files limit that cannot silently stall the socket, and a
socket folder that belongs to someone else (docs/protocol.md §1.3). Test-sized limits come from the
config keys `max_connections`, `idle_timeout_s` and `partial_line_timeout_s`.

The cases of tests/e2e/daemon/test_bad_requests.py (a folder open to others, a foreign peer uid,
oversized lines) are not repeated here.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.daemon import DaemonFactory, DaemonProcess, finish_all, wait_for
from tests.support.raw_socket import PING, closed
from tests.support.raw_socket import read_reply as reply
from tests.support.robust import (
    Agent,
    OpenFilesDaemon,
    admitted_client,
    agent_with,
    assert_every_answer,
    config_args,
)

NOBODY = 65534


@pytest.fixture
def agent(base: str) -> Agent:
    return agent_with(base, {"alpha": (1, 2), "beta": (1, 2)})


def ping(daemon: DaemonProcess) -> tuple[socket.socket, dict[str, Any] | None]:
    sock = daemon.connect_raw(timeout=10)
    try:
        sock.sendall(PING)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused and closed at once: its error line is still there to read
    return sock, reply(sock)


@pytest.fixture
def held() -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


def test_connection_cap_gives_a_clear_error_and_others_are_served(
    agent: Agent, daemons: DaemonFactory, held: list[socket.socket]
) -> None:
    daemon = daemons(extra_args=config_args(agent.base, "cap", {"max_connections": 8})).start()
    for _ in range(8):
        sock, answer = ping(daemon)
        held.append(sock)
        assert answer is not None and answer["ok"] is True
    over, answer = ping(daemon)
    assert answer is not None and answer["ok"] is False
    assert answer["error"]["code"] == "unavailable"
    assert "too many connections (limit 8)" in answer["error"]["message"]
    assert closed(over)
    over.close()
    for sock in held:  # those admitted are still served
        sock.sendall(PING)
        answer = reply(sock)
        assert answer is not None and answer["ok"] is True
    held.pop().close()

    def admitted() -> bool:
        sock, answer = ping(daemon)
        if answer is not None and answer["ok"]:
            held.append(sock)
            return True
        sock.close()
        return False

    wait_for(admitted, timeout=10, what="a freed place to be given to a new connection")
    held.pop().close()
    wait_for(admitted, timeout=10, what="a freed place for the checking client")
    held.pop().close()
    # Connections are counted as they are accepted: the place is free once the daemon has
    # seen the close, which may come a moment after the next connect.
    with wait_for(lambda: admitted_client(daemon), 10, "a place for the checking client") as client:
        client.sync()
        assert_every_answer(client, agent.served(), agent.workspaces, list(agent.docs))


def test_idle_connection_is_closed(agent: Agent, daemons: DaemonFactory) -> None:
    settings = {"idle_timeout_s": 0.5}
    daemon = daemons(extra_args=config_args(agent.base, "idle", settings)).start()
    sock, answer = ping(daemon)
    assert answer is not None and answer["ok"] is True
    started = time.monotonic()
    assert closed(sock), "an idle connection was kept"
    assert 0.4 <= time.monotonic() - started < 5
    sock.close()
    timeouts = daemon.events_named("connection_timeout")
    assert timeouts and timeouts[-1]["partial_line"] is False


def test_a_request_line_must_be_finished_in_time_however_it_trickles(
    agent: Agent, daemons: DaemonFactory
) -> None:
    # A slow-loris client sends a byte every 50 ms and never finishes its line: every byte
    # comes well within the limit, but the line does not, so it is closed after ~1 s. A line
    # sent in pieces that does finish in time is answered. Others are served all along.
    settings = {"partial_line_timeout_s": 1.0}
    daemon = daemons(extra_args=config_args(agent.base, "loris", settings)).start()
    with daemon.connect_raw(timeout=10) as patient:
        patient.sendall(b'{"op":')
        patient.sendall(b'"ping"}\n')
        answer = reply(patient)
        assert answer is not None and answer["ok"] is True
    loris = daemon.connect_raw(timeout=0.05)
    latencies = []
    started = time.monotonic()
    with daemon.client() as other:
        for byte in b'{"op":"ping","pad":"' + b"x" * 80:  # 5 s at this pace
            try:
                loris.sendall(bytes([byte]))
                if loris.recv(1) == b"":  # waits 50 ms: the pace of the trickle
                    break
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                break
            asked = time.monotonic()
            other.ping()
            latencies.append(time.monotonic() - asked)
        else:
            raise AssertionError("the trickling line was never cut off")
    lasted = time.monotonic() - started
    loris.close()
    assert 0.9 <= lasted < 3, lasted
    assert max(latencies) < 0.5, "the trickle held others up"
    timeouts = daemon.events_named("connection_timeout")
    assert timeouts and timeouts[-1]["partial_line"] is True


def test_an_open_files_limit_cannot_silently_stall_the_socket(
    agent: Agent, base: str, held: list[socket.socket]
) -> None:
    # Under a hard open-files limit of 200 the 1024-connection cap cannot be met: without care
    # accept() fails (EMFILE), clients hang in the backlog, and the indexer cannot open files.
    # The daemon lowers its cap to fit instead, and says so.
    made: list[DaemonProcess] = []
    try:
        tight = OpenFilesDaemon(base, soft=200, hard=200, name="tight")
        made.append(tight)
        tight.start()
        capped = tight.events_named("connections_capped")
        assert capped and capped[0]["max_connections"] == 72 and capped[0]["nofile"] == 200
        answers = []
        for _ in range(100):
            sock, answer = ping(tight)
            held.append(sock)
            answers.append(answer)
        ok = [a for a in answers if a is not None and a["ok"]]
        refused = [a for a in answers if a is not None and not a["ok"]]
        assert len(ok) == 72 and len(refused) == 28
        assert all("too many connections" in a["error"]["message"] for a in refused)
        for sock in held[-30:]:  # the refused ones, and two places for the checking client
            sock.close()
        del held[-30:]
        agent.save(agent.new(agent.workspaces[0], 1))  # the indexer can still open files
        with wait_for(lambda: admitted_client(tight), 10, "a place for the checking client") as c:
            c.sync()
            assert_every_answer(c, agent.served(), agent.workspaces, list(agent.docs))
        # Where the hard limit allows, the soft limit is raised to what the cap needs.
        roomy = OpenFilesDaemon(base, soft=256, hard=4096, name="roomy")
        made.append(roomy)
        roomy.start()
        assert roomy.open_files_limit() == 1024 + 128
        assert not roomy.events_named("connections_capped")
    finally:
        finish_all(made)


def test_socket_folder_owned_by_another_user_is_refused(daemons: DaemonFactory) -> None:
    if os.getuid() != 0:
        pytest.skip("giving a folder to another uid needs root")
    daemon = daemons()
    daemon.allowed_errors.add("start_failed")
    folder = os.path.dirname(daemon.socket_path)
    os.makedirs(folder, mode=0o700)
    os.chown(folder, NOBODY, NOBODY)
    assert daemon.spawn().wait(20) == 1
    failed = daemon.events_named("start_failed")
    assert failed and f"belongs to uid {NOBODY}" in failed[0]["error"]
    assert "another user may be impersonating sessiond: refusing to listen" in failed[0]["error"]
    assert not os.path.exists(daemon.socket_path)
