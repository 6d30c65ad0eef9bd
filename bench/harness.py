"""The benchmark's harness: timing summaries, a raw-socket client, page cache drops, and a
`watch` stream reader (the daemon subprocess is bench/daemon.py). No figures are chosen here;
bench_resume.py does."""

from __future__ import annotations

import json
import os
import random
import socket
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from sessionctl import Client

from tests.support.agent_sim import compact
from tests.support.stats import percentile


def summary(values_s: Sequence[float]) -> dict[str, Any]:
    """p50/p90/p99/max/mean of durations given in seconds, reported in microseconds."""
    us = [v * 1e6 for v in values_s]
    return {
        "n": len(us),
        "p50_us": round(percentile(us, 50), 1),
        "p90_us": round(percentile(us, 90), 1),
        "p99_us": round(percentile(us, 99), 1),
        "max_us": round(max(us), 1) if us else None,
        "mean_us": round(statistics.fmean(us), 1) if us else None,
    }


def median_ms(values_s: Sequence[float]) -> float | None:
    return round(statistics.median(values_s) * 1000, 2) if values_s else None


def raw_latency(
    sock_path: str, lines: Sequence[bytes], decode: Callable[[bytes], Any] | None = None
) -> dict[str, Any]:
    """The daemon's share: pre-encoded requests, each reply read up to its newline, and
    decoded with `decode` if given (else unparsed)."""
    return summary(raw_times(sock_path, lines, decode))


def raw_times(
    sock_path: str, lines: Sequence[bytes], decode: Callable[[bytes], Any] | None = None
) -> list[float]:
    """raw_latency()'s durations, one per line, in order, over one connection."""
    times: list[float] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(sock_path)
        buf = bytearray()
        clock = time.perf_counter
        for line in lines:
            t0 = clock()
            sock.sendall(line)
            start = 0
            while (end := buf.find(b"\n", start)) < 0:
                start = len(buf)
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise RuntimeError("the daemon closed the connection")
                buf += chunk
            if decode is not None:
                decode(memoryview(buf)[:end])
            times.append(clock() - t0)
            if not buf.startswith(b'{"ok":true'):
                raise RuntimeError(f"the daemon answered {bytes(buf[:200])!r}")
            del buf[: end + 1]
    return times


def drop_caches() -> bool:
    """Empty the page cache (root only); false when not allowed."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    except OSError:
        return False


def sessionctl_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "sessionctl")
    return [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "sessionctl"]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(
    pid: int, window_s: float = 0.5, busy_share: float = 0.05, deadline_s: float = 120.0
) -> float:
    """Wait until the process used less than `busy_share` of a CPU over `window_s` (it may
    still be persisting its cache or the like after ready); returns the seconds waited."""
    started = time.monotonic()
    samples = [(started, cpu_seconds(pid))]
    while time.monotonic() - started < deadline_s:
        time.sleep(0.05)
        now = time.monotonic()
        samples.append((now, cpu_seconds(pid)))
        old = [x for x in samples if now - x[0] >= window_s]
        if old:
            t0, c0 = old[-1]
            if (samples[-1][1] - c0) / (now - t0) < busy_share:
                return t0 - started  # when the quiet window began
    return time.monotonic() - started


def status_of(sock: str) -> dict[str, Any]:
    with Client(socket=sock, timeout=30) as client:
        return client.status()


# --- the run ---------------------------------------------------------------------------------


class WatchStream:
    """A `watch` subscription read in the calling thread, each line stamped on arrival."""

    def __init__(self, sock_path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(sock_path)
        self.sock.sendall(b'{"op":"watch"}\n')
        self.buf = b""
        first = self._line(10.0)
        if first is None or not json.loads(first[1]).get("ok"):
            raise RuntimeError(f"watch refused: {first!r}")

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _line(self, timeout: float) -> tuple[int, bytes] | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                return None
            if not chunk:
                raise RuntimeError("the watch stream ended")
            self.buf += chunk
        at = time.monotonic_ns()
        line, _, self.buf = self.buf.partition(b"\n")
        return at, line

    def wait_saved(self, session_id: str, mtime_ns: int, timeout: float) -> int | None:
        """Arrival time (monotonic ns) of the `session_saved` event for this file version."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            got = self._line(remaining)
            if got is None:
                return None
            event = json.loads(got[1])
            if (
                event.get("event") == "session_saved"
                and event.get("session_id") == session_id
                and event.get("mtime_ns") == mtime_ns
            ):
                return got[0]
        return None


def random_uuid(rng: random.Random) -> str:
    import uuid

    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def target_bytes(sessions: Sequence[dict[str, Any]]) -> int:
    return int(statistics.median(len(compact(s)) for s in sessions))
