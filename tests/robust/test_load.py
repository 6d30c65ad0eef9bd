"""Load: 200 concurrent clients making mixed resume/get/list requests while the simulated agent
saves 100 times a second; no errors, no wrong answers; and slow-loris clients (idle
connections, lines trickled a byte at a time, replies never read) do not delay the others.

The clients run as threads in four processes (the machine has two cores; one process's GIL
would measure itself, not the daemon). Each answer is checked on its own (support/load.py):
consistent with the save it claims to be, and never older than one this client saw before.
200 clients x 1,000 requests is the target size and the default: 45-70 s on this 2-core
machine. SESSIOND_LOAD_REQUESTS sets the requests per client (smaller for a quick run).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import threading
import time
from typing import Any

import pytest

from tests.support.agent_sim import AgentSim, make_workspace
from tests.support.corpus import agent_global_root
from tests.support.daemon import DaemonFactory, DaemonProcess
from tests.support.load import (
    Plan,
    Saver,
    Tally,
    check_header,
    client_process,
    mtime_of,
    updated_of,
)
from tests.support.stats import percentile

CLIENTS = 200
PROCESSES = 4
REQUESTS = int(os.environ.get("SESSIOND_LOAD_REQUESTS", "1000"))
WORKSPACES = 8
SAVES_PER_SECOND = 100


def run_clients(plan: Plan, progress: Any, seed: int) -> Tally:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    workers = [
        context.Process(target=client_process, args=(plan, progress, seed + i * 1000, out))
        for i in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    total = Tally()
    for _ in workers:
        total.merge(out.get(timeout=600))
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    return total


class Loris:
    """Clients that hold the daemon's resources without doing their share: idle connections,
    request lines trickled a byte every 100 ms, and pipelined requests whose replies are never
    read (the daemon's writes to them block)."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        self.stop = threading.Event()
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> Loris:
        for _ in range(100):
            self.sockets.append(self.daemon.connect_raw())
        for _ in range(3):
            sock = self.daemon.connect_raw()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            self.sockets.append(sock)
            self._spawn(self._never_read, sock)
        for _ in range(10):
            sock = self.daemon.connect_raw()
            self.sockets.append(sock)
            self._spawn(self._trickle, sock)
        return self

    def _spawn(self, target: Any, sock: socket.socket) -> None:
        thread = threading.Thread(target=target, args=(sock,), daemon=True)
        thread.start()
        self.threads.append(thread)

    def _trickle(self, sock: socket.socket) -> None:
        try:
            sock.sendall(b'{"op":"list","pad":"')
            while not self.stop.wait(0.1):  # the trickle's pace
                sock.sendall(b"x")
        except OSError:
            pass  # cut off: what the partial-line deadline does

    def _never_read(self, sock: socket.socket) -> None:
        request = b'{"op":"list","limit":100}\n'
        try:
            while not self.stop.is_set():
                sock.sendall(request * 64)
        except OSError:
            pass  # the daemon's buffers and ours are full: it stopped reading too

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in self.threads:
            thread.join(10)


@pytest.fixture
def saver(base: str) -> Saver:
    sim = AgentSim(agent_global_root(base))
    workspaces, folders = [], []
    for w in range(WORKSPACES):
        workspace, folder = make_workspace(os.path.join(base, "ws"), f"load-{w}")
        workspaces.append(workspace)
        folders.append(folder)
    return Saver(sim, workspaces, folders)


def test_200_clients_under_saves_and_slow_loris(saver: Saver, daemons: DaemonFactory) -> None:
    ids = saver.prepare()
    daemon = daemons().start()
    plan = Plan(
        socket=daemon.socket_path,
        workspaces=tuple(saver.workspaces),
        folders=tuple(saver.folders),
        ids=tuple(ids),
        requests=REQUESTS // 2,
        threads=CLIENTS // PROCESSES,
    )
    progress = multiprocessing.get_context("spawn").Array("q", WORKSPACES, lock=False)
    stop = threading.Event()
    saves: list[int] = []
    agent = threading.Thread(
        target=lambda: saves.append(saver.run(SAVES_PER_SECOND, stop, progress)), daemon=True
    )
    started = time.monotonic()
    agent.start()
    try:
        plain = run_clients(plan, progress, seed=1)
        with Loris(daemon):
            loris = run_clients(plan, progress, seed=2)
    finally:
        stop.set()
        agent.join(10)
    elapsed = time.monotonic() - started
    rate = saves[0] / elapsed
    both = Tally()
    both.merge(plain)
    both.merge(loris)
    p50, p99 = percentile(both.latencies, 50), percentile(both.latencies, 99)
    plain_p99, loris_p99 = percentile(plain.latencies, 99), percentile(loris.latencies, 99)
    print(
        f"\nload: {CLIENTS} clients x {2 * plan.requests} requests in {elapsed:.1f}s "
        f"({len(both.latencies) / elapsed:.0f}/s) while saving {rate:.0f}/s; "
        f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms; p99 without slow-loris "
        f"{plain_p99 * 1000:.2f} ms, with {loris_p99 * 1000:.2f} ms; "
        f"{both.wrong} wrong answers, {both.errors} errors"
    )
    assert both.errors == 0 and both.wrong == 0, both.examples
    assert len(both.latencies) == CLIENTS * 2 * plan.requests
    assert rate > 0.9 * SAVES_PER_SECOND, f"the agent saved only {rate:.0f} times a second"
    assert loris_p99 < 3 * plain_p99 + 0.05, "slow-loris clients delayed the others"
    with daemon.client() as client:
        client.sync()
        assert client.status()["sessions"] == len(saver.docs)


def test_the_answer_checks_catch_wrong_answers() -> None:
    # The load test's checks must be able to fail: a header of another workspace, another
    # save, or another session's path is caught.
    plan = Plan("/s", ("/w0", "/w1"), ("/w0/s", "/w1/s"), (), requests=0, threads=0)
    good = {
        "id": "a",
        "title": "7:3",
        "mtime_ns": mtime_of(7),
        "message_count": 3,
        "updated_at": updated_of(7),
        "directory": "/w1",
        "path": "/w1/s/a.json",
    }
    assert check_header(good, plan, 1) == (7, None)
    assert check_header(good, plan, 0)[1] is not None
    for key, value in [
        ("title", "8:3"),
        ("mtime_ns", mtime_of(6)),
        ("message_count", 2),
        ("updated_at", updated_of(8)),
        ("path", "/w1/s/b.json"),
        ("title", None),
    ]:
        assert check_header({**good, key: value}, plan, 1)[1] is not None, key
