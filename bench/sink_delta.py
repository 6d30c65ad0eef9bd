"""bench_sink.py's figure 4: one appended message on a large history, delta against whole.

Two daemons run side by side in the same run, each with its own sessions folder, bucket and
recording proxy in front of the one moto server: one with the default `delta_uploads = true`,
one with `delta_uploads = false` (every upload whole). For each history size the same session
is saved in both folders and uploaded whole (the first upload); then one message is appended
and saved in each folder in turn, and for each daemon we measure the bytes its proxy carried to
the server (requests, headers included), `bytes_sent` from `status`, the daemon's own upload
time (`duration_ms`), the rename -> `upload_done` time, and that the object equals the history.
Only one daemon works at a time.
"""

from __future__ import annotations

import gc
import hashlib
import os
import random
import time
from typing import Any

from sessionctl import Client

from bench.common import log
from bench.sink_harness import (
    BIG_DEADLINE_S,
    BUCKET,
    FLUSH_TIMEOUT_S,
    MIB,
    PREFIX,
    Events,
    Tracked,
    Writer,
    big_session,
    sink_daemon,
)
from tests.support.agent_sim import compact
from tests.support.daemon import private_env
from tests.support.s3proxy import RecordingProxy
from tests.support.s3server import S3Server

MODES = ("delta", "whole")


class Side:
    """One daemon (delta or whole), its folder, bucket and proxy."""

    def __init__(self, mode: str, work: str, runtime: str, server: S3Server) -> None:
        self.mode = mode
        self.bucket = f"{BUCKET}-{mode}"
        server.create_bucket(self.bucket)
        self.proxy = RecordingProxy(server.port)
        self.proxy.start()
        folder = os.path.join(work, mode)
        self.writer = Writer(folder)
        env = private_env(
            os.path.join(folder, "env"),
            runtime,
            server.history_env(self.bucket, PREFIX, endpoint=self.proxy.endpoint),
        )
        config_dir = os.path.join(env["XDG_CONFIG_HOME"], "sessiond")
        os.makedirs(config_dir, exist_ok=True)
        with open(os.path.join(config_dir, "config.toml"), "w", encoding="utf-8") as fh:
            fh.write(f"[s3]\ndelta_uploads = {'true' if mode == 'delta' else 'false'}\n")
        sock = os.path.join(runtime, f"{mode}.sock")
        self.daemon = sink_daemon(folder, env, sock, self.writer.sessions_dir)
        self.client = Client(socket=sock, timeout=FLUSH_TIMEOUT_S + 30)
        self.events = Events(sock)

    def uploads(self) -> dict[str, Any]:
        return dict(self.client.status()["uploads"])

    def upload(self, tracked: Tracked) -> dict[str, Any]:
        """Save `tracked` in this side's folder and measure its upload."""
        before, sent_before = self.uploads(), self.proxy.sent
        saved = self.writer.save(tracked)
        at, event = self.events.upload_done(tracked, BIG_DEADLINE_S)
        self.client.flush(FLUSH_TIMEOUT_S)
        after = self.uploads()
        logged = [
            e
            for e in self.daemon.log_events("upload_done")
            if e.get("session_id") == tracked.id and e.get("bytes") == saved.body_bytes
        ]
        return {
            "history_bytes": saved.body_bytes,
            "wire_bytes": self.proxy.sent - sent_before,
            "history_bytes_sent": after["bytes_sent"] - before["bytes_sent"],
            "daemon_upload_ms": event["duration_ms"],
            "rename_to_current_ms": round((at - saved.before_rename_ns) / 1e6, 1),
            "delta": logged[-1].get("delta") if logged else None,
            "fallback": logged[-1].get("fallback") if logged else None,
        }

    def object_sha256(self, server: S3Server, session_id: str) -> str:
        body = server.get(self.bucket, f"{PREFIX}{session_id}/history.jsonl")
        return hashlib.sha256(body).hexdigest()

    def close(self) -> None:
        try:
            self.daemon.stop()
        finally:
            self.proxy.stop()


def measure(
    server: S3Server, work: str, runtime: str, sizes_mib: list[float], message_kib: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    sides = [Side(mode, work, runtime, server) for mode in MODES]
    rows: list[dict[str, Any]] = []
    try:
        for size in sizes_mib:
            t0 = time.perf_counter()
            tracked = big_session(sides[0].writer, rng, int(size * MIB), message_kib * 1024)
            built_s = time.perf_counter() - t0
            log(f"delta: {tracked.body_bytes / MIB:.1f} MiB history built in {built_s:.1f} s")
            row: dict[str, Any] = {"size_mib": size, "history_bytes": tracked.body_bytes}
            for side in sides:
                row[f"{side.mode}_first"] = side.upload(tracked)
            message = {"role": "user", "content": [{"type": "text", "text": "one more ✓"}]}
            tracked.session["messages"].append(message)
            row["appended_bytes"] = len(compact(message)) + 1
            tracked.refresh()
            expected = hashlib.sha256(tracked.expected_body()).hexdigest()
            for side in sides:
                run = side.upload(tracked)
                run["object_verified"] = side.object_sha256(server, tracked.id) == expected
                row[side.mode] = run
                log(
                    f"delta: {size:g} MiB + 1 message, {side.mode}: {run['wire_bytes']:,} B on "
                    f"the wire, upload {run['daemon_upload_ms']} ms, delta {run['delta']}, "
                    f"verified {run['object_verified']}"
                )
                if not run["object_verified"]:
                    raise RuntimeError(f"delta bench: the {side.mode} object differs")
            rows.append(row)
            del tracked
            gc.collect()
    finally:
        for side in sides:
            side.close()
    return {"rows": rows, "message_kib": message_kib}


def report_rows(delta: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for row in delta["rows"]:
        d, w = row["delta"], row["whole"]
        rows.append(
            (
                f"+1 message ({row['appended_bytes']} B) on {row['history_bytes'] / MIB:.1f} MiB",
                f"delta: {d['wire_bytes']:,} B on the wire, upload {d['daemon_upload_ms']} ms, "
                f"rename -> current {d['rename_to_current_ms']:.0f} ms | whole: "
                f"{w['wire_bytes'] / MIB:.1f} MiB on the wire, upload {w['daemon_upload_ms']} ms, "
                f"rename -> current {w['rename_to_current_ms']:.0f} ms",
            )
        )
        rows.append(
            (
                "  first (whole) upload of each side",
                f"delta side {row['delta_first']['daemon_upload_ms']} ms, whole side "
                f"{row['whole_first']['daemon_upload_ms']} ms; objects verified "
                f"{d['object_verified'] and w['object_verified']}; delta used {d['delta']}",
            )
        )
    return rows
