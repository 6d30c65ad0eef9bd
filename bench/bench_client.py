"""The client at its floor, and the daemon's `resume` against its `ping`, in one run.

1. Whole processes, each timed from spawn to exit, in interleaved rounds (one run of every mode
   per round, so a busy moment of the machine hits all of them alike); medians:
   - `python -c pass` and `python -I -S -c pass`: the interpreter with and without `site`
     (the venv's interpreter, the one the `sessionctl` script runs);
   - the floor: a minimal Python client of the same socket (`json` + `_socket`, one `resume`
     request, print the id): what any Python client pays;
   - `python -c "import sessionctl.cli"`: the client's imports alone;
   - `sessionctl resume` against the running daemon, three ways: the installed console script,
     `python -m sessionctl`, and a launcher without `site` (`python -I -S`, the client's folder
     put on sys.path by hand), to see what the entry point costs;
   - `sessionctl resume --no-fallback` with the daemon down (exit 3), and the fallback scan
     (`sessionctl resume` with the daemon down, every folder of the agent's registry).
   All of these in a clean venv holding the client as pip installs it (see clean_install());
   then `python -c pass` and `sessionctl resume` of this checkout's editable venv, whose
   `site` runs setuptools' editable finder on every start.
2. The daemon's `ping` and `resume` alternating on one raw connection (pre-encoded requests,
   each reply read to its newline): p50/p99 of each, the same run, the same connection.

The client's bytecode is compiled first, as an installed package's is (an editable install
under PYTHONDONTWRITEBYTECODE would compile every module on every start).

    python -m bench.bench_client                 # the 10,000-session corpus of bench_resume.py
    python -m bench.bench_client --quick         # 300 small sessions, a few rounds
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sessionctl
from sessionctl import Client

from bench import corpus as corpus_mod
from bench.common import log, write_json
from bench.daemon import start_daemon
from bench.harness import raw_times, sessionctl_command, summary
from tests.support.agent_sim import compact
from tests.support.stats import percentile

CLIENT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(sessionctl.__file__)))
DOWN = "/nonexistent/sessiond.sock"

FLOOR = """\
import json, sys, _socket
s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(json.dumps({"op": "resume", "workspace": sys.argv[2]}).encode() + b"\\n")
b = b""
while not b.endswith(b"\\n"):
    b += s.recv(65536)
print(json.loads(b)["session_id"])
"""


@dataclass
class Mode:
    name: str
    label: str
    cmd: list[str]
    rc: int = 0
    every: int = 1  # run in one round out of `every` (the slow scan)
    answers: bool = False  # prints the session id


@dataclass
class Install:
    """A Python environment holding the client, and its `sessionctl` script."""

    python: str
    script: list[str]
    client_dir: str  # the folder holding the sessionctl package


def clean_install(work: str) -> Install:
    """A fresh venv (no pip, no other package) holding the client as pip would install it:
    the package in site-packages with its bytecode compiled, and the console-script wrapper
    pip writes (copied from this environment's script). What a user's `pipx install` runs,
    without the editable finder that this checkout's `pip install -e` adds to every start."""
    venv = os.path.join(work, "venv")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", venv], check=True)
    python = os.path.join(venv, "bin", "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    shutil.copytree(
        os.path.join(CLIENT_DIR, "sessionctl"),
        os.path.join(site, "sessionctl"),
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    compileall.compile_dir(os.path.join(site, "sessionctl"), quiet=1)
    script = os.path.join(venv, "bin", "sessionctl")
    ours = sessionctl_command()
    if len(ours) == 1:
        with open(ours[0], encoding="utf-8") as fh:
            body = fh.read().split("\n", 1)[1]
    else:
        body = "import sys\nfrom sessionctl.cli import main\nsys.exit(main())\n"
    with open(script, "w", encoding="utf-8") as fh:
        fh.write(f"#!{python}\n{body}")
    os.chmod(script, 0o755)
    return Install(python, [script], site)


def no_site_launcher(client_dir: str) -> str:
    return (
        f"import sys\nsys.path.insert(0, {client_dir!r})\n"
        "from sessionctl.cli import main\nsys.exit(main())\n"
    )


def modes(clean: Install, dev: Install, sock: str, workspace: str) -> list[Mode]:
    py = clean.python
    resume = ["resume", "--workspace", workspace]
    floor = [py, "-c", FLOOR, sock, workspace]
    launcher = [py, "-I", "-S", "-c", no_site_launcher(clean.client_dir)]
    return [
        Mode("python", "python -c pass", [py, "-c", "pass"]),
        Mode("python_no_site", "python -I -S -c pass", [py, "-I", "-S", "-c", "pass"]),
        Mode("floor", "floor: json + _socket, one resume, print", floor, answers=True),
        Mode(
            "import_cli", 'python -c "import sessionctl.cli"', [py, "-c", "import sessionctl.cli"]
        ),
        Mode(
            "sessionctl",
            "sessionctl resume",
            [*clean.script, *resume, "--socket", sock],
            answers=True,
        ),
        Mode(
            "module",
            "python -m sessionctl resume",
            [py, "-m", "sessionctl", *resume, "--socket", sock],
            answers=True,
        ),
        Mode(
            "no_site",
            "sessionctl resume, launcher without site (-I -S)",
            [*launcher, *resume, "--socket", sock],
            answers=True,
        ),
        Mode(
            "down_no_fallback",
            "sessionctl resume --no-fallback, daemon down (exit 3)",
            [*clean.script, *resume, "--socket", DOWN, "--no-fallback"],
            rc=3,
        ),
        Mode(
            "fallback",
            "sessionctl resume, daemon down: fallback scan",
            [*clean.script, *resume, "--socket", DOWN],
            every=3,
            answers=True,
        ),
        Mode("dev_python", "editable venv: python -c pass", [dev.python, "-c", "pass"]),
        Mode(
            "dev_sessionctl",
            "editable venv: sessionctl resume",
            [*dev.script, *resume, "--socket", sock],
            answers=True,
        ),
    ]


def timed(cmd: Sequence[str], env: dict[str, str], cwd: str) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, check=False)
    return time.perf_counter() - t0, done.returncode, done.stdout.decode().strip()


def processes(
    installs: tuple[Install, Install],
    sock: str,
    picks: Sequence[str],
    expected: dict[str, str],
    env: dict[str, str],
    work: str,
) -> dict[str, Any]:
    by_mode = modes(*installs, sock, picks[0])
    times: dict[str, list[float]] = {m.name: [] for m in by_mode}
    wrong: dict[str, int] = {m.name: 0 for m in by_mode}
    for mode in by_mode:  # warm-up: page cache, and a first check that each mode works
        _, rc, out = timed(mode.cmd, env, work)
        if rc != mode.rc:
            raise RuntimeError(f"{mode.label}: exit {rc}, expected {mode.rc}: {out}")
    for i, workspace in enumerate(picks):
        for mode in modes(*installs, sock, workspace):
            if i % mode.every:
                continue
            elapsed, rc, out = timed(mode.cmd, env, work)
            if rc != mode.rc:
                raise RuntimeError(f"{mode.label}: exit {rc}, expected {mode.rc}")
            times[mode.name].append(elapsed)
            wrong[mode.name] += mode.answers and out != expected[workspace]
        if (i + 1) % 10 == 0:
            log(f"process rounds: {i + 1}/{len(picks)}")
    return {
        m.name: {
            "label": m.label,
            "median_ms": round(statistics.median(times[m.name]) * 1000, 2),
            "p90_ms": round(percentile(times[m.name], 90) * 1000, 2),
            "runs": len(times[m.name]),
            "wrong": wrong[m.name],
        }
        for m in by_mode
    }


def ping_vs_resume(sock: str, paths: Sequence[str], requests: int, rng: random.Random) -> dict:
    ping = b'{"op":"ping"}\n'
    resumes = [compact({"op": "resume", "workspace": p}) + b"\n" for p in paths]
    raw_times(sock, resumes + [ping] * 100)  # every workspace once, as a running system has
    lines: list[bytes] = []
    for _ in range(requests):
        lines += [ping, rng.choice(resumes)]
    times = raw_times(sock, lines)
    return {"ping": summary(times[0::2]), "resume": summary(times[1::2])}


def check_answers(sock: str, expected: dict[str, str]) -> int:
    with Client(socket=sock, timeout=30) as client:
        return sum(client.resume(p)["session_id"] != want for p, want in expected.items())


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def report(results: dict[str, Any]) -> str:
    proc = results["process"]
    base = proc["python"]["median_ms"]
    lines = [
        f"sessionctl at its floor ({results['when']}; {results['machine']})",
        f"corpus: {results['corpus']['sessions']} sessions, {results['corpus']['workspaces']} "
        f"workspaces; load average before {results['load_average_before']}",
        "",
        f"{'whole process (median of interleaved rounds)':<58} {'median':>9} {'p90':>9}  vs python",
    ]
    for entry in proc.values():
        wrong = f"  ({entry['wrong']} wrong)" if entry["wrong"] else ""
        lines.append(
            f"{entry['label']:<58} {entry['median_ms']:>6.2f} ms {entry['p90_ms']:>6.2f} ms"
            f"  {ratio(entry['median_ms'], base):>6}  n={entry['runs']}{wrong}"
        )
    d = results["daemon"]
    lines += [
        "",
        f"daemon, one raw connection, ping and resume alternating ({d['ping']['n']} each)",
        f"  ping    p50 {d['ping']['p50_us']:>7.1f} us   p99 {d['ping']['p99_us']:>7.1f} us",
        f"  resume  p50 {d['resume']['p50_us']:>7.1f} us   p99 {d['resume']['p99_us']:>7.1f} us"
        f"   resume/ping p50 {ratio(d['resume']['p50_us'], d['ping']['p50_us'])}",
        f"answers checked: {results['answers_wrong']} wrong of {results['corpus']['workspaces']}",
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    corpus_mod.add_corpus_options(parser, big_session=False)
    parser.add_argument("--rounds", type=int, help="process rounds (default 30)")
    parser.add_argument("--requests", type=int, help="ping+resume pairs (default 20,000)")
    parser.add_argument("--quick", action="store_true", help="300 small sessions, few rounds")
    parser.add_argument("--jobs", type=int, help="corpus generation processes (default: cores)")
    parser.add_argument("--json-out", metavar="FILE", help="write the figures as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    q = args.quick

    def pick(value: Any, quick: Any, full: Any) -> Any:
        return value if value is not None else (quick if q else full)

    params = corpus_mod.Params(
        sessions=pick(args.sessions, 300, 10_000),
        workspaces=pick(args.workspaces, 20, 200),
        seed=args.seed,
        scale=pick(args.scale, 0.05, 1.0),
        big_mb=50.0,
    )
    corpus_dir = args.corpus or os.path.join(
        tempfile.gettempdir(),
        "sessiond-bench",
        f"corpus-n{params.sessions}-w{params.workspaces}-seed{params.seed}-scale{params.scale:g}",
    )
    log(f"corpus: {corpus_dir}")
    corpus, _ = corpus_mod.ensure(corpus_dir, params, args.jobs)
    compileall.compile_dir(os.path.join(CLIENT_DIR, "sessionctl"), quiet=1)
    rng = random.Random(args.seed)
    workspaces = [w for w in corpus.workspaces if w["newest_id"]]
    expected = {w["path"]: w["newest_id"] for w in workspaces}
    env = corpus.env(with_registry=True)
    work = tempfile.mkdtemp(prefix="sessiond-bench-client-")
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()}, {os.cpu_count()} cpus, Python {platform.python_version()}",
        "corpus": {"sessions": corpus.params.sessions, "workspaces": len(workspaces)},
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    daemon = start_daemon(work, "client", env, os.path.join(work, "state"), [], discover=True)
    try:
        results["answers_wrong"] = check_answers(daemon.socket, expected)
        paths = list(expected)
        results["daemon"] = ping_vs_resume(
            daemon.socket, paths, pick(args.requests, 2_000, 20_000), rng
        )
        log(f"daemon: {results['daemon']}")
        picks = [rng.choice(paths) for _ in range(pick(args.rounds, 6, 30))]
        dev = Install(sys.executable, sessionctl_command(), CLIENT_DIR)
        installs = (clean_install(work), dev)
        results["process"] = processes(installs, daemon.socket, picks, expected, env, work)
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(report(results))
    if args.json_out:
        write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
