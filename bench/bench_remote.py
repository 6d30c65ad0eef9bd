"""Figures for remote list and restore (docs/remote.md), measured with two real daemons
("laptop" and "desk", each with its own home, state folder and machine name) sharing one moto
server over HTTP on 127.0.0.1:

1. Requests one `remote_list` makes, at 500 and 5,000 sessions split over the two machines,
   counted in the server's own request log (only the requests for the bench's bucket).
2. Bytes sessiond sends for one appended message on a 100 MiB session (everything: history
   delta, parts, catalog, HTTP headers), counted by a recording proxy in front of the server.
3. Restore time of that 100 MiB session on "desk" (the op, client wall time), 3 runs.
4. Save on "laptop" to restorable on "desk" (the session's new version in desk's
   `remote_list`), with the default debounce and catalog interval: p50/p90 over 20 saves.

    python -m bench.bench_remote            # full (~a few minutes)
    python -m bench.bench_remote --quick    # 500 sessions only, a 10 MiB session
    python -m bench.bench_remote --list-only  # figure 1 alone
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import log
from bench.daemon import Daemon
from tests.support.agent_sim import AgentSim, big_session, compact, new_session
from tests.support.daemon import private_env
from tests.support.s3proxy import RecordingProxy
from tests.support.s3server import S3Server
from tests.support.stats import percentile

MIB = 1 << 20
PREFIX = "history/"


class Machine:
    def __init__(self, work: str, name: str, endpoint: str, bucket: str) -> None:
        self.name = name
        self.home = os.path.join(work, name)
        self.workspace = os.path.join(self.home, "proj")
        self.sessions_dir = os.path.join(self.workspace, ".codetether-agent", "sessions")
        os.makedirs(self.sessions_dir)
        env = {
            "CODETETHER_HISTORY_S3_ENDPOINT": endpoint,
            "CODETETHER_HISTORY_S3_BUCKET": bucket,
            "CODETETHER_HISTORY_S3_ACCESS_KEY": "bench-access",
            "CODETETHER_HISTORY_S3_SECRET_KEY": "bench-secret",
            "CODETETHER_HISTORY_S3_PREFIX": PREFIX,
            "SESSIOND_MACHINE_NAME": name,
        }
        self.daemon = Daemon(
            self.home,
            name,
            private_env(self.home, self.home, env),
            os.path.join(self.home, f"{name}-state"),
            [self.sessions_dir],
            discover=False,
        )
        self.sim = AgentSim(os.path.join(self.home, "global"), write_pointer=False)

    def start(self) -> Machine:
        self.daemon.start(deadline_s=120)
        return self

    def save(self, session: dict[str, Any]) -> None:
        self.sim.save(self.sessions_dir, session)

    def flush(self) -> None:
        client = self.daemon.client(timeout=900)
        client.sync(timeout=300)
        result = client.flush(timeout=600)
        assert result["failed"] == 0, result

    def stop(self) -> None:
        if self.daemon.running:
            self.daemon.stop(timeout=60)


def bucket_requests(server: S3Server, bucket: str) -> int:
    assert server.log_path is not None
    text = Path(server.log_path).read_text(errors="replace")
    return sum(1 for line in text.splitlines() if f" /{bucket}/" in line or f" /{bucket}?" in line)


def small(directory: str, number: int) -> dict[str, Any]:
    session = new_session(directory, title=f"session {number}")
    session["messages"].append({"role": "user", "content": [{"type": "text", "text": "hi ✓"}]})
    session["pages"].append("conversation")
    return session


def figure_requests(work: str, server: S3Server, total: int) -> dict[str, Any]:
    bucket = f"remote-list-{total}"
    server.create_bucket(bucket)
    machines = [
        Machine(os.path.join(work, bucket), n, server.endpoint, bucket) for n in ("laptop", "desk")
    ]
    try:
        for machine in machines:
            machine.start()
            for number in range(total // 2):
                machine.save(small(machine.workspace, number))
        started = time.monotonic()
        for machine in machines:
            machine.flush()
        log(f"{total} sessions uploaded in {time.monotonic() - started:.1f}s")
        desk = machines[1].daemon.client(timeout=120)
        counts, times = [], []
        for _ in range(3):
            before = bucket_requests(server, bucket)
            t0 = time.perf_counter()
            answer = desk.remote_list(limit=1)
            times.append(time.perf_counter() - t0)
            counts.append(bucket_requests(server, bucket) - before)
            assert answer["total"] == total, answer["total"]
        catalog_bytes = [
            m.daemon.client().status()["uploads"]["remote"]["catalog_bytes"] for m in machines
        ]
        return {
            "sessions": total,
            "requests": counts,
            "ms": [round(t * 1000, 1) for t in times],
            "catalog_bytes": catalog_bytes,
        }
    finally:
        for machine in machines:
            machine.stop()


def figure_large(work: str, server: S3Server, mib: int, saves: int) -> dict[str, Any]:
    bucket = "remote-large"
    server.create_bucket(bucket)
    out: dict[str, Any] = {}
    with RecordingProxy(server.port) as proxy:
        laptop = Machine(os.path.join(work, "large"), "laptop", proxy.endpoint, bucket).start()
        desk = Machine(os.path.join(work, "large"), "desk", server.endpoint, bucket).start()
        try:
            session = big_session(laptop.workspace, mib, title="big", pages=True)
            laptop.save(session)
            laptop.flush()
            out["file_bytes"] = len(compact(session))
            message = {"role": "user", "content": [{"type": "text", "text": "one more ✓"}]}
            sent_before = proxy.sent
            session["messages"].append(message)
            session["pages"].append("conversation")
            laptop.save(session)
            laptop.flush()
            out["append_bytes_on_wire"] = proxy.sent - sent_before
            out["appended_message_bytes"] = len(compact(message)) + 1
            restore_s = []
            for run in range(3):
                target = os.path.join(desk.home, f"restore-{run}")
                os.makedirs(target)
                t0 = time.perf_counter()
                answer = desk.daemon.client(timeout=600).restore(session["id"], workspace=target)
                restore_s.append(time.perf_counter() - t0)
                assert answer["action"] == "created"
            out["restore_s"] = [round(s, 3) for s in restore_s]
            out["save_to_restorable_s"] = save_to_restorable(laptop, desk, saves)
        finally:
            laptop.stop()
            desk.stop()
    return out


def save_to_restorable(laptop: Machine, desk: Machine, saves: int) -> dict[str, float]:
    session = small(laptop.workspace, 0)
    laptop.save(session)
    laptop.flush()
    client = desk.daemon.client(timeout=60)
    waits = []
    for _ in range(saves):
        session["messages"].append({"role": "user", "content": [{"type": "text", "text": "x"}]})
        session["pages"].append("conversation")
        count = len(session["messages"])
        t0 = time.perf_counter()
        laptop.save(session)
        while True:
            listed = client.remote_list(machine="laptop", limit=1000)["sessions"]
            if any(h["id"] == session["id"] and h["message_count"] == count for h in listed):
                break
            if time.perf_counter() - t0 > 60:
                raise AssertionError("never restorable")
        waits.append(time.perf_counter() - t0)
    return {
        "p50": round(percentile(waits, 50), 3),
        "p90": round(percentile(waits, 90), 3),
        "max": round(max(waits), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--list-only", action="store_true", help="figure 1 only")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-remote-")
    server = S3Server(log_path=os.path.join(work, "moto.log"))
    server.start()
    try:
        sizes = (500,) if args.quick else (500, 5000)
        for total in sizes:
            figure = figure_requests(work, server, total)
            print(
                f"remote_list at {total} sessions on 2 machines: requests {figure['requests']}, "
                f"ms {figure['ms']}, catalog bytes (gzip) per machine {figure['catalog_bytes']}"
            )
        if args.list_only:
            return 0
        mib = 10 if args.quick else 100
        large = figure_large(work, server, mib, 5 if args.quick else 20)
        print(
            f"{mib} MiB session ({large['file_bytes']} bytes): one appended message "
            f"({large['appended_message_bytes']} bytes) sent {large['append_bytes_on_wire']} "
            f"bytes on the wire (history delta, parts, catalog, headers)"
        )
        print(f"restore of the {mib} MiB session from the local server: {large['restore_s']} s")
        s2r = large["save_to_restorable_s"]
        print(
            f"save on laptop -> restorable on desk (default debounce 0.25 s, catalog 1 s): "
            f"p50 {s2r['p50']} s, p90 {s2r['p90']} s, max {s2r['max']} s"
        )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
