"""One benchmark run of sessiond against the agent's own lookup, on one generated corpus.

Prints a table and (with --json-out) writes the same figures as JSON:

1. `resume` latency over one persistent connection (sessionctl.Client): p50/p99 over random
   workspaces; the same with `window=1000`; `window=1000` on the one big (50 MB) session
   against decoding that file; a raw-socket client for the daemon's own share.
2. Whole-process `sessionctl resume --workspace W` against the daemon, and the same command
   with the daemon unreachable (`--socket /nonexistent`: its fallback scan), warm and cold page
   cache; the in-process `sessionctl.scan.scan_resume`. The scan is timed over the folders the
   client reads (every folder in the agent's registry) and over the workspace's own folder only
   (what the agent's `scan_sync` reads).
3. Rename to visible: a writer saves a session as the agent does (tmp + rename) and the time
   until the daemon's `watch` stream reports it, and until `resume` (without sync) returns it.
4. Daemon start to ready (until `ping` answers): first start with a cold page cache, first
   start with a warm one, restart over the state folder of a previous run; resident memory from
   `status`, and of an empty daemon for the per-session figure.

    python -m bench.bench_resume                       # 10,000 sessions (generated once)
    python -m bench.bench_resume --quick               # 300 small sessions, < 30 s
    python -m bench.bench_resume --json-out out.json --corpus /big/disk/corpus
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sessionctl import Client
from sessionctl.scan import scan_resume

from bench import corpus as corpus_mod
from bench.common import log, write_json
from bench.daemon import Daemon, start_daemon
from bench.harness import (
    WatchStream,
    drop_caches,
    median_ms,
    random_uuid,
    raw_latency,
    sessionctl_command,
    status_of,
    summary,
    target_bytes,
    wait_idle,
)
from bench.report import WINDOW, report
from tests.support.agent_sim import (
    AgentSim,
    add_turn,
    compact,
    make_workspace,
    new_session,
)

EVENT_DEADLINE_S = 5.0


@dataclass
class Settings:
    requests: int
    window_requests: int
    big_requests: int
    runs: int
    cold_runs: int
    saves: int
    poll_saves: int
    drop: bool
    discover: bool
    seed: int


class Bench:
    def __init__(self, corpus: corpus_mod.Corpus, settings: Settings, work: str) -> None:
        self.corpus = corpus
        self.s = settings
        self.work = work
        self.rng = random.Random(settings.seed)
        self.workspaces = [w for w in corpus.workspaces if w["newest_id"]]
        self.expected = {w["path"]: w["newest_id"] for w in self.workspaces}
        self.env = corpus.env(with_registry=True)
        self.env_local = corpus.env(with_registry=False)
        os.makedirs(self.env_local["XDG_DATA_HOME"], exist_ok=True)
        self.live_ws, self.live_dir = make_workspace(os.path.join(work, "live"), "ws-live")
        os.makedirs(self.live_dir, exist_ok=True)
        self.results: dict[str, Any] = {}
        # The same workspaces for every process and scan mode, so their medians compare.
        self.scan_picks = [self.rng.choice(self.workspaces)["path"] for _ in range(settings.runs)]
        self.can_drop = settings.drop and drop_caches()
        if corpus.big:
            self.expected[corpus.big["path"]] = corpus.big["newest_id"]

    # 4. start ---------------------------------------------------------------------------------

    def daemon_folders(self) -> list[str]:
        folders = [self.live_dir]
        if not self.s.discover:
            folders += [w["sessions_dir"] for w in self.workspaces]
            if self.corpus.big:
                folders.append(self.corpus.big["sessions_dir"])
        return folders

    def start(self, tag: str, state_dir: str, cold: bool) -> Daemon:
        if cold and not (self.s.drop and drop_caches()):
            cold = False
        daemon = start_daemon(
            self.work, tag, self.env, state_dir, self.daemon_folders(), self.s.discover
        )
        status = status_of(daemon.socket)
        settle = wait_idle(daemon.proc.pid)
        settled = status_of(daemon.socket)
        self.results.setdefault("start", {})[tag] = {
            "busy_after_ready_s": round(settle, 2),
            "ready_s": round(daemon.ready_s, 3),
            "daemon_ready_ms": daemon.ready_event.get("duration_ms"),
            "cold_page_cache": cold,
            "sessions": status["sessions"],
            "workspaces": status["workspaces"],
            "rss_bytes": status["memory"]["rss_bytes"],
            "rss_settled_bytes": settled["memory"]["rss_bytes"],
        }
        log(
            f"{tag}: ready in {daemon.ready_s:.2f} s, {status['sessions']} sessions, "
            f"RSS {status['memory']['rss_bytes'] / 2**20:.1f} MiB"
        )
        return daemon

    def empty_daemon_rss(self) -> int:
        empty = os.path.join(self.work, "empty-sessions")
        os.makedirs(empty, exist_ok=True)
        daemon = start_daemon(
            self.work,
            "empty",
            self.env_local,
            os.path.join(self.work, "state-empty"),
            [empty],
            discover=False,
        )
        try:
            return int(status_of(daemon.socket)["memory"]["rss_bytes"])
        finally:
            daemon.stop()

    # 1. latency -------------------------------------------------------------------------------

    def check_answers(self, sock: str) -> dict[str, Any]:
        wrong = []
        with Client(socket=sock, timeout=30) as client:
            for ws in self.workspaces:
                got = client.resume(ws["path"])["session_id"]
                if got != ws["newest_id"]:
                    wrong.append(ws["name"])
        return {"workspaces": len(self.workspaces), "wrong": wrong}

    def latency(self, sock: str) -> None:
        paths = [w["path"] for w in self.workspaces]
        out = self.results.setdefault("resume", {})
        with Client(socket=sock, timeout=30) as client:
            for path in paths:  # warm-up: each workspace once, as a running system would be
                client.resume(path)
            picks = [self.rng.choice(paths) for _ in range(self.s.requests)]
            times, wrong = self._timed(lambda p: client.resume(p), picks)
            out["plain"] = summary(times) | {"wrong": wrong}
            log(f"resume: p50 {out['plain']['p50_us']} us, p99 {out['plain']['p99_us']} us")
            picks = [self.rng.choice(paths) for _ in range(self.s.window_requests)]
            times, wrong = self._timed(lambda p: client.resume(p, window=WINDOW), picks)
            out["window"] = summary(times) | {"wrong": wrong, "window": WINDOW}
            log(f"resume window={WINDOW}: p50 {out['window']['p50_us']} us")
        lines = [compact({"op": "resume", "workspace": p}) + b"\n" for p in paths]
        out["raw_socket"] = raw_latency(sock, [self.rng.choice(lines) for _ in picks])

    def _timed(
        self, call: Callable[[str], dict[str, Any]], picks: Sequence[str]
    ) -> tuple[list[float], int]:
        times: list[float] = []
        answers: list[str] = []
        clock = time.perf_counter
        for path in picks:
            t0 = clock()
            reply = call(path)
            times.append(clock() - t0)
            answers.append(reply["session_id"])
        wrong = sum(1 for p, a in zip(picks, answers, strict=True) if self.expected.get(p) != a)
        return times, wrong

    def big_window(self, sock: str) -> None:
        big = self.corpus.big
        if not big:
            return
        import msgspec  # the daemon's decoder, to compare with

        path = os.path.join(big["sessions_dir"], f"{big['newest_id']}.json")
        with Client(socket=sock, timeout=60) as client:
            client.resume(big["path"], window=WINDOW)
            times, wrong = self._timed(
                lambda p: client.resume(p, window=WINDOW), [big["path"]] * self.s.big_requests
            )
        request = compact({"op": "resume", "workspace": big["path"], "window": WINDOW}) + b"\n"
        raw = raw_latency(sock, [request] * self.s.big_requests)
        raw_msgspec = raw_latency(sock, [request] * self.s.big_requests, msgspec.json.decode)
        reads, json_times, msgspec_times = [], [], []
        for _ in range(max(3, self.s.runs // 2)):
            t0 = time.perf_counter()
            with open(path, "rb") as fh:
                data = fh.read()
            t1 = time.perf_counter()
            json.loads(data)
            t2 = time.perf_counter()
            msgspec.json.decode(data)
            t3 = time.perf_counter()
            reads.append(t1 - t0)
            json_times.append(t2 - t1 + t1 - t0)
            msgspec_times.append(t3 - t2 + t1 - t0)
        scan_times = []
        for _ in range(max(3, self.s.runs // 2)):
            t0 = time.perf_counter()
            scan_resume(big["path"], window=WINDOW, env=self.env_local)
            scan_times.append(time.perf_counter() - t0)
        daemon = summary(times)
        self.results["big_window"] = {
            "file_bytes": big["newest_bytes"],
            "window": WINDOW,
            "daemon": daemon | {"wrong": wrong},
            "daemon_raw_socket": raw,
            "daemon_raw_socket_msgspec": raw_msgspec,
            "read_file_ms": median_ms(reads),
            "read_json_loads_ms": median_ms(json_times),
            "read_msgspec_decode_ms": median_ms(msgspec_times),
            "scan_resume_window_ms": median_ms(scan_times),
        }
        log(
            f"big window: daemon p50 {daemon['p50_us'] / 1000:.1f} ms; "
            f"msgspec decode {median_ms(msgspec_times)} ms, json.loads {median_ms(json_times)} ms"
        )

    # 2. sessionctl processes and scans --------------------------------------------------------

    def interpreter_start(self) -> list[float | None]:
        """Median whole-process time of `python -c pass` and of importing the CLI."""
        medians = []
        for code in ("pass", "import sessionctl.cli"):
            times = []
            for _ in range(self.s.runs):
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", code], env=self.env, check=True)
                times.append(time.perf_counter() - t0)
            medians.append(median_ms(times))
        return medians

    def run_sessionctl(self, workspace: str, sock: str, env: dict[str, str]) -> tuple[float, str]:
        cmd = [*sessionctl_command(), "resume", "--workspace", workspace, "--socket", sock]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, cwd=self.work, check=False)
        elapsed = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr!r}")
        return elapsed, done.stdout.decode().strip()

    def source_of(self, workspace: str, sock: str, env: dict[str, str]) -> str:
        cmd = [*sessionctl_command(), "resume", "--workspace", workspace, "--socket", sock]
        done = subprocess.run([*cmd, "--json"], env=env, capture_output=True, check=False)
        return str(json.loads(done.stdout or b"{}").get("source"))

    def processes(self, sock: str) -> None:
        out = self.results.setdefault("process", {})
        picks = self.scan_picks
        cold_picks = picks[: self.s.cold_runs]
        modes = {
            "daemon": (sock, self.env),
            "scan_registry": ("/nonexistent/sessiond.sock", self.env),
            "scan_local": ("/nonexistent/sessiond.sock", self.env_local),
        }
        for mode, (sock_path, env) in modes.items():
            source = self.source_of(picks[0], sock_path, env)
            entry: dict[str, Any] = {"source": source, "wrong": 0}
            for cache, ws_list in (("warm", picks), ("cold", cold_picks)):
                if cache == "cold" and not self.can_drop:
                    entry["cold_ms"] = None
                    continue
                if cache == "warm":
                    self.run_sessionctl(ws_list[0], sock_path, env)  # page cache and .pyc
                times = []
                for ws in ws_list:
                    if cache == "cold":
                        drop_caches()
                    elapsed, got = self.run_sessionctl(ws, sock_path, env)
                    times.append(elapsed)
                    entry["wrong"] += got != self.expected[ws]
                entry[f"{cache}_ms"] = median_ms(times)
                entry[f"{cache}_all_ms"] = [round(t * 1000, 1) for t in times]
                entry[f"{cache}_runs"] = len(times)
            out[mode] = entry
            log(f"sessionctl resume [{mode}]: warm {entry['warm_ms']} ms, cold {entry['cold_ms']}")

    def in_process_scans(self) -> None:
        out = self.results.setdefault("scan_resume", {})
        picks = self.scan_picks
        for scope, env in (("registry", self.env), ("local", self.env_local)):
            entry: dict[str, Any] = {"wrong": 0}
            for cache, ws_list in (("warm", picks), ("cold", picks[: self.s.cold_runs])):
                if cache == "cold" and not self.can_drop:
                    entry["cold_ms"] = None
                    continue
                if cache == "warm":
                    scan_resume(ws_list[0], env=env)
                times = []
                for ws in ws_list:
                    if cache == "cold":
                        drop_caches()
                    t0 = time.perf_counter()
                    got = scan_resume(ws, env=env)["session_id"]
                    times.append(time.perf_counter() - t0)
                    entry["wrong"] += got != self.expected[ws]
                entry[f"{cache}_ms"] = median_ms(times)
                entry[f"{cache}_all_ms"] = [round(t * 1000, 1) for t in times]
                entry[f"{cache}_runs"] = len(times)
            out[scope] = entry
            log(f"scan_resume [{scope}]: warm {entry['warm_ms']} ms, cold {entry['cold_ms']} ms")

    # 3. rename to visible ---------------------------------------------------------------------

    def live_sessions(self, count: int) -> list[dict[str, Any]]:
        rng = random.Random(self.s.seed)
        target = int(corpus_mod.MEDIAN_KB * 1024 * self.corpus.params.scale)
        sessions = []
        for _ in range(count):
            session = new_session(self.live_ws, session_id=str(random_uuid(rng)))
            while len(compact(session)) < target:
                add_turn(session, rng, text_bytes=2000)
            sessions.append(session)
        return sessions

    def save(self, sim: AgentSim, session: dict[str, Any]) -> tuple[int, int]:
        """`Session::save` as AgentSim does it, with the clock read just before the rename.
        Returns (monotonic ns before rename, file mtime_ns)."""
        path = os.path.join(self.live_dir, f"{session['id']}.json")
        tmp = path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(compact(session))
            mtime_ns = os.fstat(fh.fileno()).st_mtime_ns
        before = time.monotonic_ns()
        os.rename(tmp, path)
        sim.write_location(session["id"], path)
        sim._journal(self.live_dir, session["id"])
        sim._upsert_index(self.live_dir, self.live_ws, session["id"])
        return before, mtime_ns

    def rename_to_visible(self, sock: str) -> None:
        sim = AgentSim(os.path.join(self.work, "live-global"))
        sessions = self.live_sessions(8)
        rng = random.Random(self.s.seed + 1)
        out = self.results.setdefault("rename_to_visible", {})
        with WatchStream(sock) as stream:
            # Until an event arrives the subscription may not be in place yet: warm up.
            for attempt in range(50):
                session = sessions[attempt % len(sessions)]
                add_turn(session, rng, text_bytes=2000)
                _, mtime_ns = self.save(sim, session)
                if stream.wait_saved(session["id"], mtime_ns, EVENT_DEADLINE_S) is not None:
                    break
            else:
                raise RuntimeError("no session_saved event arrived from the watch stream")
            latencies: list[float] = []
            missed = 0
            for i in range(self.s.saves):
                session = sessions[i % len(sessions)]
                add_turn(session, rng, text_bytes=2000)
                before, mtime_ns = self.save(sim, session)
                at = stream.wait_saved(session["id"], mtime_ns, EVENT_DEADLINE_S)
                if at is None:
                    missed += 1
                else:
                    latencies.append((at - before) / 1e9)
                time.sleep(rng.uniform(0.005, 0.02))  # saves are apart, as between tool calls
        out["watch"] = summary(latencies) | {
            "missed": missed,
            "file_bytes": target_bytes(sessions),
            "over_100ms": sum(v > 0.1 for v in latencies),
            "all_us": [round(v * 1e6) for v in latencies],
        }
        log(f"rename->watch: p50 {out['watch']['p50_us']} us, p99 {out['watch']['p99_us']} us")

        latencies, missed = [], 0
        with Client(socket=sock, timeout=10) as client:
            for i in range(self.s.poll_saves):
                session = sessions[i % len(sessions)]
                add_turn(session, rng, text_bytes=2000)
                before, mtime_ns = self.save(sim, session)
                deadline = time.monotonic() + EVENT_DEADLINE_S
                seen = None
                while time.monotonic() < deadline:
                    reply = client.resume(self.live_ws)
                    now = time.monotonic_ns()
                    if (
                        reply["session_id"] == session["id"]
                        and reply["header"]["mtime_ns"] == mtime_ns
                    ):
                        seen = now
                        break
                    time.sleep(0.0002)
                if seen is None:
                    missed += 1
                else:
                    latencies.append((seen - before) / 1e9)
                time.sleep(rng.uniform(0.005, 0.02))
        out["resume_poll"] = summary(latencies) | {"missed": missed, "poll_interval_us": 200}
        log(f"rename->resume: p50 {out['resume_poll']['p50_us']} us")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    corpus_mod.add_corpus_options(parser, big_session=True)
    parser.add_argument("--requests", type=int, help="timed resume requests (default 5,000)")
    parser.add_argument("--saves", type=int, help="timed saves for rename-to-visible (200)")
    parser.add_argument("--runs", type=int, help="process runs per mode, warm cache (9)")
    parser.add_argument("--cold-runs", type=int, help="process runs per mode, cold cache (3)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="300 small sessions, fewer runs, no cache dropping (CI smoke)",
    )
    parser.add_argument(
        "--no-drop-caches",
        action="store_true",
        help="never drop the page cache (cold figures are then left out)",
    )
    parser.add_argument(
        "--no-discover",
        action="store_true",
        help="give the daemon every folder with --sessions-dir instead of the agent's registry",
    )
    parser.add_argument("--jobs", type=int, help="corpus generation processes (default: cores)")
    parser.add_argument("--json-out", metavar="FILE", help="write the figures as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the run's work folder")
    return parser


def _pick(value: Any, quick: Any, full: Any, is_quick: bool) -> Any:
    return value if value is not None else (quick if is_quick else full)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    q = args.quick
    params = corpus_mod.Params(
        sessions=_pick(args.sessions, 300, 10_000, q),
        workspaces=_pick(args.workspaces, 20, 200, q),
        seed=args.seed,
        scale=_pick(args.scale, 0.05, 1.0, q),
        big_mb=_pick(args.big_mb, 50.0, 50.0, q),
    )
    requests = _pick(args.requests, 500, 5_000, q)
    settings = Settings(
        requests=requests,
        window_requests=max(10, requests // 10),
        big_requests=5 if q else 20,
        runs=_pick(args.runs, 3, 9, q),
        cold_runs=_pick(args.cold_runs, 1, 3, q),
        saves=_pick(args.saves, 40, 200, q),
        poll_saves=_pick(args.saves, 40, 200, q) // 2,
        drop=not (args.no_drop_caches or q),
        discover=not args.no_discover,
        seed=args.seed,
    )
    corpus_dir = args.corpus or os.path.join(
        tempfile.gettempdir(),
        "sessiond-bench",
        f"corpus-n{params.sessions}-w{params.workspaces}-seed{params.seed}-scale{params.scale:g}",
    )
    started = time.monotonic()
    log(f"corpus: {corpus_dir}")
    corpus, reused = corpus_mod.ensure(corpus_dir, params, args.jobs)
    gen_s = time.monotonic() - started
    log(f"corpus {'reused' if reused else 'generated'} in {gen_s:.1f} s")
    work = tempfile.mkdtemp(prefix="sessiond-bench-run-")
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()}, {os.cpu_count()} cpus, Python {platform.python_version()}",
        "corpus": corpus.totals
        | {
            "path": corpus.root,
            "workspaces": len(corpus.workspaces),
            "reused": reused,
            "params": corpus.params.__dict__,
        },
        "settings": settings.__dict__,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        run(corpus, settings, work, results)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["bench_s"] = round(time.monotonic() - started - gen_s, 1)
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(report(results))
    print(
        f"\ncorpus {'reused' if reused else 'generated'} in {gen_s:.1f} s; "
        f"benchmark took {results['bench_s']:.1f} s"
    )
    if args.json_out:
        write_json(args.json_out, results)
    return 0


def run(corpus: corpus_mod.Corpus, settings: Settings, work: str, results: dict[str, Any]) -> None:
    bench = Bench(corpus, settings, work)
    bench.results = results
    results["interpreter_start_ms"] = bench.interpreter_start()
    # A first start on a cold page cache; the next one finds the files cached.
    bench.start("first-cold", os.path.join(work, "state-a"), cold=True).stop()
    state = os.path.join(work, "state")
    daemon = bench.start("first-warm", state, cold=False)
    try:
        check = bench.check_answers(daemon.socket)
        bench.latency(daemon.socket)
        bench.big_window(daemon.socket)
        bench.processes(daemon.socket)
        bench.in_process_scans()
        bench.rename_to_visible(daemon.socket)
        rss_after = status_of(daemon.socket)["memory"]["rss_bytes"]
    finally:
        results["stop_s"] = round(daemon.stop(), 3)
    # Restarts over the state the test daemon left: after a reboot (cold), and warm.
    bench.start("restart-cold", state, cold=True).stop()
    bench.start("restart-warm", state, cold=False).stop()
    rss_empty = bench.empty_daemon_rss()

    def per_session(tag: str) -> float:
        start = results["start"][tag]
        return (start["rss_settled_bytes"] - rss_empty) / max(1, start["sessions"])

    results["memory"] = {
        "rss_after_bytes": rss_after,
        "rss_empty_bytes": rss_empty,
        "per_session_bytes": per_session("first-warm"),
        "per_session_restart_bytes": per_session("restart-warm"),
    }
    timed_wrong = sum(
        e.get("wrong", 0)
        for section in ("resume", "process", "scan_resume")
        for e in results.get(section, {}).values()
    )
    results["correctness"] = check | {"timed_wrong": timed_wrong}


if __name__ == "__main__":
    sys.exit(main())
