"""Replies nobody reads: clients that pipeline large windowed requests and never read must not
pin the daemon's memory, neither while they are connected nor after they close; and the daemon
keeps answering everyone else right (docs/protocol.md, "Connections").
"""

from __future__ import annotations

import os
import socket

from tests.support.agent_sim import add_turn
from tests.support.daemon import DaemonFactory, wait_for
from tests.support.robust import Agent, assert_every_answer, config_args

CLIENTS = 30
PIPELINED = 40  # windowed resumes each non-reading client sends at once
TURNS = 1000  # a session of ~7 MiB: each reply is about that big
MIB = 1024 * 1024


def rss_bound(baseline: int, reply: int) -> int:
    """What the daemon may use with 30 clients that each asked for 40 big replies and read
    none: what it used before, plus one reply (and a bit) per client. (Before the fix each
    connection held its reply twice, its own and the transport's copy.)"""
    return baseline + CLIENTS * (reply * 5 // 4 + MIB)


RSS_AFTER_SLACK = 40 * MIB
"""Once they have all gone, the big replies' memory is given back: the daemon is this close to
what it used before they came (before the fix it kept all of it)."""


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_clients_that_never_read_do_not_pin_memory(base: str, daemons: DaemonFactory) -> None:
    agent = Agent(base, os.path.join(base, "ws"))
    workspace = agent.add_workspace("big")
    doc = agent.new(workspace, turns=0)
    for _ in range(TURNS):
        add_turn(doc, agent.rng, 4000)
    agent.save(doc)
    daemon = daemons().start()
    assert daemon.proc is not None
    request = (
        b'{"op":"resume","workspace":"%s","window":100000}\n' % workspace.encode()
    ) * PIPELINED
    with daemon.client(timeout=60) as client:
        client.sync()
        client.resume(workspace, window=100000)
        reply_bytes = os.path.getsize(agent.path_of(doc["id"]))
        baseline = rss_bytes(daemon.proc.pid)
        socks = []
        for _ in range(CLIENTS):
            sock = daemon.connect_raw()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(request)
            socks.append(sock)
        # Each connection's first reply is on its way once a byte of it has arrived: from then
        # on it has made all the replies it will make until its client reads.
        for sock in socks:
            assert sock.recv(1, socket.MSG_PEEK) == b"{"
        assert_every_answer(client, agent.served(), agent.workspaces, [doc["id"]], window=5)
        peak = rss_bytes(daemon.proc.pid)
        bound = rss_bound(baseline, reply_bytes)
        print(
            f"\nreplies: {CLIENTS} clients x {PIPELINED} pipelined replies of "
            f"{reply_bytes / MIB:.1f} MiB, none read: RSS baseline {baseline / MIB:.0f} MiB, "
            f"with them {peak / MIB:.0f} MiB (bound {bound / MIB:.0f})"
        )
        for sock in socks:
            sock.close()

        def released() -> int | None:
            client.ping()
            rss = rss_bytes(daemon.proc.pid)
            return rss if rss < baseline + RSS_AFTER_SLACK else None

        after = wait_for(released, timeout=30, what="memory given back after the clients left")
        assert_every_answer(client, agent.served(), agent.workspaces, [doc["id"]], window=5)
    print(f"replies: after the clients closed, RSS {after / MIB:.0f} MiB")
    assert peak < bound


def test_a_client_that_reads_nothing_is_closed_after_the_idle_timeout(
    base: str, daemons: DaemonFactory
) -> None:
    agent = Agent(base, os.path.join(base, "ws"))
    workspace = agent.add_workspace("big")
    doc = agent.new(workspace, turns=0)
    for _ in range(300):
        add_turn(doc, agent.rng, 4000)
    agent.save(doc)
    daemon = daemons(extra_args=config_args(base, "quick", {"idle_timeout_s": 1.0})).start()
    request = b'{"op":"resume","workspace":"%s","window":100000}\n' % workspace.encode()
    with daemon.client(timeout=60) as client:
        client.sync()
    sock = daemon.connect_raw(timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(request * 3)
    assert sock.recv(1, socket.MSG_PEEK) == b"{"
    wait_for(
        lambda: [e for e in daemon.events_named("connection_timeout") if e.get("unread_reply")],
        timeout=30,
        what="the unread connection closed",
    )
    # What it had been sent is all it gets: the rest of its reply never comes.
    received = b""
    while chunk := sock.recv(1 << 20):
        received += chunk
    assert 0 < len(received) < os.path.getsize(agent.path_of(doc["id"]))
    sock.close()
    with daemon.client(timeout=60) as client:
        assert_every_answer(client, agent.served(), agent.workspaces, [doc["id"]], window=5)
