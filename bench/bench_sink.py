"""The history sink's figures (bench/README.md, "bench_sink.py"), measured on the real
daemon uploading to a real S3 server (moto's server mode on 127.0.0.1, over HTTP).

Prints a table and (with --json-out) writes the same figures as JSON:

1. A burst of 100 saves on one session, once in a tight loop and once at one save per 20 ms:
   uploads made (`status` `uploaded` delta) and bytes uploaded (`bytes_uploaded` delta) against
   what the agent would have uploaded (one whole history per save) and the bytes written to the
   session file; the time from the last save to the object holding it; the object checked.
2. Rename to object current: single saves of a ~150 KB session, each awaited (its
   `upload_done`) before the next, with the default debounce: p50/p90/max, split into
   rename -> indexed (`session_saved`) and the daemon's own upload time.
3. A session whose history is >= 100 MiB, built from large messages and saved as the agent
   does: save -> `upload_done`, the upload's MiB/s, and the object's SHA-256 against the
   expected body.
4. One appended message on 10 MiB, 100 MiB and 500 MiB histories, delta against whole in the
   same run: bytes on the wire (a recording proxy) and time per upload (sink_delta.py). (Not
   1 GiB: a session file over 512 MiB is past the agent's load limit, so sessiond, like the
   agent, does not take it for a session.)

    python -m bench.bench_sink                      # full size (~1 minute)
    python -m bench.bench_sink --quick              # smoke run: 10 MiB history, < 30 s
    python -m bench.bench_sink --json-out sink.json
    python -m bench.bench_sink --only-delta --delta-mib 10,100,500   # figure 4 alone
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sessionctl import Client
from sessiond.sink.config import SinkConfig

from bench import sink_delta
from bench.common import log, write_json
from bench.daemon import Daemon
from bench.sink_harness import (
    BIG_DEADLINE_S,
    BUCKET,
    FLUSH_TIMEOUT_S,
    MIB,
    PREFIX,
    Events,
    Saved,
    Tracked,
    Writer,
    big_session,
    sink_daemon,
)
from tests.support.agent_sim import add_turn
from tests.support.daemon import private_env
from tests.support.s3server import S3Server
from tests.support.stats import percentile

UPLOAD_DEADLINE_S = 60.0  # a small session's upload_done after its save


# --- small helpers ---------------------------------------------------------------------------


def summary_ms(values_ms: Sequence[float]) -> dict[str, Any]:
    return {
        "n": len(values_ms),
        "p50_ms": round(percentile(values_ms, 50), 2),
        "p90_ms": round(percentile(values_ms, 90), 2),
        "max_ms": round(max(values_ms), 2) if values_ms else None,
        "min_ms": round(min(values_ms), 2) if values_ms else None,
        "mean_ms": round(statistics.fmean(values_ms), 2) if values_ms else None,
        "all_ms": [round(v, 2) for v in values_ms],
    }


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sink_defaults() -> dict[str, Any]:
    """SinkConfig's defaults: the daemon runs with no config file, so these apply."""
    names = ("debounce_s", "max_delay_s", "concurrency", "multipart_threshold")
    fields = {f.name: f.default for f in dataclasses.fields(SinkConfig)}
    return {name: fields[name] for name in names}


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Settings:
    burst_saves: int
    interval_ms: float
    singles: int
    base_kb: int
    big_mib: float
    big_runs: int
    message_kib: int
    seed: int


class Bench:
    def __init__(
        self, settings: Settings, server: S3Server, daemon: Daemon, writer: Writer
    ) -> None:
        self.s = settings
        self.server = server
        self.daemon = daemon
        self.writer = writer
        self.rng = random.Random(settings.seed)
        self.client = Client(socket=daemon.socket, timeout=30)
        self.events = Events(daemon.socket)
        self.results: dict[str, Any] = {}

    def uploads(self) -> dict[str, Any]:
        return dict(self.client.status()["uploads"])

    def object_sha256(self, session_id: str) -> str:
        return sha256(self.server.get(BUCKET, f"{PREFIX}{session_id}/history.jsonl"))

    def settle(self, tracked: Tracked) -> None:
        """Save a new session once and wait until its object is current."""
        self.writer.save(tracked)
        self.events.upload_done(tracked, UPLOAD_DEADLINE_S)
        self.client.flush(FLUSH_TIMEOUT_S)

    # 1. bursts --------------------------------------------------------------------------------

    def burst(self, name: str, interval_s: float) -> dict[str, Any]:
        tracked = self.writer.new(self.rng, self.s.base_kb * 1024)
        self.settle(tracked)
        start_body = tracked.body_bytes
        before = self.uploads()
        mark = len(self.events.seen)
        file_bytes = agent_bytes = 0
        saves: list[Saved] = []
        t0 = time.monotonic()
        for i in range(self.s.burst_saves):
            if interval_s > 0:  # the workload's own pace: save i at t0 + i * interval
                delay = t0 + i * interval_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            add_turn(tracked.session, self.rng, text_bytes=2000)
            saved = self.writer.save(tracked)
            saves.append(saved)
            file_bytes += saved.file_bytes
            agent_bytes += saved.body_bytes
        burst_s = (saves[-1].before_rename_ns - saves[0].before_rename_ns) / 1e9
        at, _ = self.events.upload_done(tracked, UPLOAD_DEADLINE_S)
        flushed = self.client.flush(FLUSH_TIMEOUT_S)
        after = self.uploads()
        verified = self.object_sha256(tracked.id) == sha256(tracked.expected_body())
        uploads_made = after["uploaded"] - before["uploaded"]
        bytes_uploaded = after["bytes_uploaded"] - before["bytes_uploaded"]
        done_at = [
            round((t - saves[0].before_rename_ns) / 1e9, 3)
            for t, e in self.events.seen[mark:]
            if e.get("event") == "upload_done" and e.get("session_id") == tracked.id
        ]
        indexed = {
            e["mtime_ns"]
            for _, e in self.events.seen[mark:]
            if e.get("event") == "session_saved" and e.get("session_id") == tracked.id
        }
        out = {
            "saves": len(saves),
            "interval_ms": interval_s * 1000,
            "burst_s": round(burst_s, 3),
            "uploads": uploads_made,
            "unchanged": after["unchanged"] - before["unchanged"],
            "failed": after["failed"] - before["failed"],
            "bytes_uploaded": bytes_uploaded,
            "agent_bytes": agent_bytes,
            "file_bytes": file_bytes,
            "uploaded_share_of_agent": round(bytes_uploaded / agent_bytes, 4),
            "uploaded_share_of_file": round(bytes_uploaded / file_bytes, 4),
            "history_bytes_first_last": [start_body, tracked.body_bytes],
            "file_bytes_last": saves[-1].file_bytes,
            "last_save_to_current_ms": round((at - saves[-1].before_rename_ns) / 1e6, 1),
            "upload_done_after_first_save_s": done_at,
            "saves_indexed": len(indexed),
            "flush": flushed,
            "object_verified": verified,
        }
        self.results.setdefault("burst", {})[name] = out
        log(
            f"burst {name}: {uploads_made} uploads for {len(saves)} saves in {burst_s:.2f} s, "
            f"{bytes_uploaded / MIB:.2f} MiB uploaded vs {agent_bytes / MIB:.1f} MiB, "
            f"verified {verified}"
        )
        if not verified:
            raise RuntimeError(f"burst {name}: the object differs from the last save")
        return out

    # 2. single saves --------------------------------------------------------------------------

    def singles(self) -> None:
        tracked = self.writer.new(self.rng, self.s.base_kb * 1024)
        self.settle(tracked)
        before = self.uploads()
        to_current: list[float] = []
        to_indexed: list[float] = []
        upload_ms: list[float] = []
        sizes: list[int] = []
        for _ in range(self.s.singles):
            time.sleep(self.rng.uniform(0.05, 0.15))  # workload: saves apart, unaligned
            add_turn(tracked.session, self.rng, text_bytes=2000)
            mark = len(self.events.seen)
            saved = self.writer.save(tracked)
            at, event = self.events.upload_done(tracked, UPLOAD_DEADLINE_S)
            to_current.append((at - saved.before_rename_ns) / 1e6)
            upload_ms.append(float(event["duration_ms"]))
            sizes.append(saved.file_bytes)
            indexed = self.events.saved_at(mark, tracked.id, saved.mtime_ns)
            if indexed is not None:
                to_indexed.append((indexed - saved.before_rename_ns) / 1e6)
        after = self.uploads()
        verified = self.object_sha256(tracked.id) == sha256(tracked.expected_body())
        self.results["single"] = {
            "rename_to_current": summary_ms(to_current),
            "rename_to_indexed": summary_ms(to_indexed),
            "daemon_upload_ms": summary_ms(upload_ms),
            "file_bytes_median": int(statistics.median(sizes)),
            "history_bytes_last": tracked.body_bytes,
            "uploads": after["uploaded"] - before["uploaded"],
            "failed": after["failed"] - before["failed"],
            "object_verified": verified,
        }
        s = self.results["single"]["rename_to_current"]
        log(f"single saves: rename -> current p50 {s['p50_ms']} ms, max {s['max_ms']} ms")
        if not verified:
            raise RuntimeError("single saves: the object differs from the last save")

    # 3. the big history -----------------------------------------------------------------------

    def big(self) -> None:
        t0 = time.perf_counter()
        tracked = big_session(
            self.writer, self.rng, int(self.s.big_mib * MIB), self.s.message_kib * 1024
        )
        build_s = time.perf_counter() - t0
        log(f"big session built: {tracked.body_bytes / MIB:.1f} MiB history in {build_s:.1f} s")
        runs: list[dict[str, Any]] = []
        for number in range(self.s.big_runs):
            if number:
                add_turn(tracked.session, self.rng, text_bytes=400)  # a new turn, saved again
            mark = len(self.events.seen)
            t_save = time.perf_counter()
            saved = self.writer.save(tracked)
            save_s = time.perf_counter() - t_save
            at, event = self.events.upload_done(tracked, BIG_DEADLINE_S)
            to_current_s = (at - saved.before_rename_ns) / 1e9
            indexed = self.events.saved_at(mark, tracked.id, saved.mtime_ns)
            expected = sha256(tracked.expected_body())
            got = self.object_sha256(tracked.id)
            duration_s = event["duration_ms"] / 1000
            logged = [
                e
                for e in self.daemon.log_events("upload_done")
                if e.get("session_id") == tracked.id and e.get("bytes") == saved.body_bytes
            ]
            run = {
                "history_bytes": saved.body_bytes,
                "file_bytes": saved.file_bytes,
                "messages": len(tracked.session["messages"]),
                "agent_save_s": round(save_s, 3),
                "rename_to_indexed_s": (
                    None if indexed is None else round((indexed - saved.before_rename_ns) / 1e9, 3)
                ),
                "rename_to_current_s": round(to_current_s, 3),
                "daemon_upload_s": round(duration_s, 3),
                "upload_mib_s": round(saved.body_bytes / MIB / duration_s, 1),
                "end_to_end_mib_s": round(saved.body_bytes / MIB / to_current_s, 1),
                "multipart": logged[-1].get("multipart") if logged else None,
                "sha256": got,
                "object_verified": got == expected,
            }
            runs.append(run)
            log(
                f"big run {number + 1}: {run['history_bytes'] / MIB:.1f} MiB, rename -> current "
                f"{to_current_s:.2f} s, upload {duration_s:.2f} s = {run['upload_mib_s']} MiB/s, "
                f"verified {run['object_verified']}"
            )
            if not run["object_verified"]:
                raise RuntimeError("big session: the object differs from the expected body")
        self.results["big"] = {
            "build_s": round(build_s, 1),
            "message_kib": self.s.message_kib,
            "runs": runs,
            "median_upload_mib_s": statistics.median(r["upload_mib_s"] for r in runs),
            "median_end_to_end_mib_s": statistics.median(r["end_to_end_mib_s"] for r in runs),
            "median_rename_to_current_s": statistics.median(r["rename_to_current_s"] for r in runs),
            "rss_bytes_after": self.client.status()["memory"]["rss_bytes"],
        }


# --- the report ------------------------------------------------------------------------------


def _size(n: float) -> str:
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    return f"{n / 1024:.0f} KiB"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def _dist(entry: dict[str, Any]) -> str:
    return (
        f"p50 {_ms(entry['p50_ms'])}  p90 {_ms(entry['p90_ms'])}  max {_ms(entry['max_ms'])}  "
        f"(n={entry['n']})"
    )


def report(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []

    def add(label: str = "", value: str = "") -> None:
        rows.append((label, value))

    d = results["daemon_config"]
    add(
        "daemon sink settings (defaults)",
        f"debounce {d['debounce_s']} s, max delay {d['max_delay_s']} s, concurrency "
        f"{d['concurrency']}, multipart from {_size(d['multipart_threshold'])}",
    )
    add("S3 server", f"moto {results['moto']} server on 127.0.0.1 over HTTP (boto3)")
    add()
    for name, label in (("tight", "tight loop"), ("paced", "")):
        b = results.get("burst", {}).get(name)
        if not b:
            continue
        label = label or f"1 save per {b['interval_ms']:g} ms"
        add(
            f"burst of {b['saves']} saves, {label}",
            f"uploads {b['uploads']} (the agent: {b['saves']}); the saves took "
            f"{b['burst_s']:.2f} s; {b['saves_indexed']} of them seen by the index",
        )
        add(
            "  bytes uploaded / agent would upload",
            f"{_size(b['bytes_uploaded'])} / {_size(b['agent_bytes'])} "
            f"({b['uploaded_share_of_agent'] * 100:.1f} %)",
        )
        add(
            "  bytes uploaded / written to the file",
            f"{_size(b['bytes_uploaded'])} / {_size(b['file_bytes'])} "
            f"({b['uploaded_share_of_file'] * 100:.1f} %); history "
            f"{_size(b['history_bytes_first_last'][0])} -> "
            f"{_size(b['history_bytes_first_last'][1])}",
        )
        add(
            "  last save -> object current",
            f"{_ms(b['last_save_to_current_ms'])} (upload_done at "
            f"{', '.join(f'+{t:.2f} s' for t in b['upload_done_after_first_save_s'])} from the "
            f"first save); object = last save: "
            f"{'yes' if b['object_verified'] else 'NO'}; failed {b['failed']}",
        )
    add()
    s = results.get("single")
    if s:
        add(
            f"rename -> object current, ~{_size(s['file_bytes_median'])} session",
            _dist(s["rename_to_current"]),
        )
        add("  rename -> indexed (session_saved)", _dist(s["rename_to_indexed"]))
        add("  the daemon's upload (duration_ms)", _dist(s["daemon_upload_ms"]))
        add(
            "  uploads / failed / last object right",
            f"{s['uploads']} / {s['failed']} / {'yes' if s['object_verified'] else 'NO'}",
        )
    add()
    big = results.get("big")
    if big:
        first = big["runs"][0]
        add(
            "big history",
            f"{_size(first['history_bytes'])} ({first['history_bytes']:,} B) in "
            f"{first['messages']} messages (~{big['message_kib']} KiB tool results); "
            f"file {_size(first['file_bytes'])}",
        )
        for number, run in enumerate(big["runs"], 1):
            add(
                f"  save {number}: rename -> object current",
                f"{run['rename_to_current_s']:.2f} s (indexed after "
                f"{run['rename_to_indexed_s']} s); upload {run['daemon_upload_s']:.2f} s = "
                f"{run['upload_mib_s']:.1f} MiB/s; multipart {run['multipart']}; "
                f"SHA-256 {'equal' if run['object_verified'] else 'DIFFERENT'}",
            )
        add(
            "  upload throughput (median)",
            f"{big['median_upload_mib_s']:.1f} MiB/s (the daemon's PUT); end to end "
            f"{big['median_end_to_end_mib_s']:.1f} MiB/s (rename -> upload_done)",
        )
        add("  daemon RSS after", _size(big["rss_bytes_after"]))
    if results.get("delta"):
        add()
        for label, value in sink_delta.report_rows(results["delta"]):
            add(label, value)
    width = max(len(k) for k, _ in rows)
    lines = [
        f"sessiond history sink benchmark  {results['when']}  {results['machine']}; load "
        f"average before {results['load_average_before']}, after "
        f"{results.get('load_average_after')}",
        "",
    ]
    lines += [f"{k.ljust(width)}  {v}".rstrip() for k, v in rows]
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--saves", type=int, default=100, help="saves per burst (100)")
    parser.add_argument(
        "--interval-ms", type=float, default=20.0, help="spacing of the paced burst (20)"
    )
    parser.add_argument("--singles", type=int, help="timed single saves (30; quick 10)")
    parser.add_argument("--base-kb", type=int, default=150, help="session size before a test")
    parser.add_argument("--big-mib", type=float, help="history size of the big one (100; quick 10)")
    parser.add_argument("--big-runs", type=int, help="saves of the big session (3; quick 1)")
    parser.add_argument(
        "--message-kib", type=int, default=1024, help="size of the big session's tool results"
    )
    parser.add_argument(
        "--delta-mib", help="history sizes for figure 4, MiB (10,100,500; quick 10)"
    )
    parser.add_argument("--only-delta", action="store_true", help="figure 4 only")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke run, < 30 s")
    parser.add_argument("--json-out", metavar="FILE", help="write the figures as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, state)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    q = args.quick
    settings = Settings(
        burst_saves=args.saves,
        interval_ms=args.interval_ms,
        singles=args.singles if args.singles is not None else (10 if q else 30),
        base_kb=args.base_kb,
        big_mib=args.big_mib if args.big_mib is not None else (10.0 if q else 100.0),
        big_runs=args.big_runs if args.big_runs is not None else (1 if q else 3),
        message_kib=args.message_kib,
        seed=args.seed,
    )
    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="sessiond-bench-sink-")
    runtime = tempfile.mkdtemp(prefix="sdb-", dir="/tmp")  # AF_UNIX paths must stay short
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()}, {os.cpu_count()} cpus, Python {platform.python_version()}",
        "moto": importlib.metadata.version("moto"),
        "daemon_config": sink_defaults(),
        "settings": dataclasses.asdict(settings),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    log(f"work folder {work}")
    server = S3Server(log_path=os.path.join(work, "moto.log"))
    daemon: Daemon | None = None
    try:
        server.start()
        server.create_bucket(BUCKET)
        writer = Writer(work)
        env = private_env(
            os.path.join(work, "env"),
            runtime,
            server.history_env(BUCKET, PREFIX),
        )
        daemon = sink_daemon(work, env, os.path.join(runtime, "sessiond.sock"), writer.sessions_dir)
        log(f"sessiond ready in {daemon.ready_s:.2f} s; moto at {server.endpoint}")
        bench = Bench(settings, server, daemon, writer)
        bench.results = results
        if not bench.uploads().get("enabled"):
            raise RuntimeError("the daemon's history sink is not enabled")
        if not args.only_delta:
            bench.burst("tight", 0.0)
            bench.burst("paced", settings.interval_ms / 1000)
            bench.singles()
            bench.big()
        final = bench.uploads()
        results["uploads_total"] = {k: final.get(k) for k in ("uploaded", "failed", "unchanged")}
        results["uploads_total"]["bytes_uploaded"] = final.get("bytes_uploaded")
        results["stop_s"] = round(daemon.stop(), 3)
        # figure 4: its own two daemons, after this one has stopped
        sizes = [float(x) for x in (args.delta_mib or ("10" if q else "10,100,500")).split(",")]
        results["delta"] = sink_delta.measure(
            server, os.path.join(work, "delta"), runtime, sizes, args.message_kib, args.seed
        )
    except BaseException:
        if daemon is not None:
            log(f"daemon log tail:\n{daemon.log_tail()}")
        raise
    finally:
        if daemon is not None:
            with contextlib.suppress(RuntimeError):
                daemon.stop()
        server.stop()
        shutil.rmtree(runtime, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["bench_s"] = round(time.monotonic() - started, 1)
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(report(results))
    print(f"\nbenchmark took {results['bench_s']:.1f} s")
    if args.json_out:
        write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
