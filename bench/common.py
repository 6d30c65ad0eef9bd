"""Helpers the benchmark scripts share: progress lines, percentiles, a daemon's JSON log, and
stopping a daemon subprocess."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def log_events(log_path: str, name: str) -> list[dict[str, Any]]:
    """The daemon's JSON log lines whose `event` is `name`."""
    events = []
    with open(log_path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == name:
                    events.append(event)
    return events


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> float:
    """SIGTERM and wait (kill past `timeout`); returns the seconds it took to exit."""
    started = time.perf_counter()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"sessiond did not stop within {timeout}s") from None
    return time.perf_counter() - started
