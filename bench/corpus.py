"""Generate a corpus of codetether sessions in the agent's on-disk format (docs/agent-files.md),
with realistic sizes.

Layout under `--out DIR`:

    DIR/manifest.json                      parameters, totals, and per workspace its expected
                                           `resume` answer (written last: its presence means
                                           the corpus is complete)
    DIR/home/                              an empty $HOME for the processes run on the corpus
    DIR/data/codetether-agent/             the agent's global root (XDG_DATA_HOME=DIR/data)
        session-locations/<id>.path        one registry pointer per session
    DIR/workspaces/ws-NNNN/.git/           one git checkout per workspace ...
        .codetether-agent/sessions/        ... with its sessions folder:
            <id>.json                      compact session JSON, written <id>.json.tmp + rename
            <id>.journal.jsonl             the two journal lines of a save
            .workspace_index.json          {"entries": {"<workspace>": "<newest id>"}}
    DIR/workspaces/ws-big/...              one extra workspace holding one big session
                                           (`--big-mb`, default 50 MB) for windowed reads

Sessions are spread over the workspaces with a mild Zipf skew (a few busy repositories, many
quiet ones). Each file's size is drawn from a log-normal (median 150 KB, sigma 1.3, capped at
40 MB), times `--scale`; mtimes are spread over 180 days. The files are built from turns shaped
like the agent's (user text, assistant thinking + tool call, tool result, assistant answer; one
tool use each), whose texts are slices of a pre-escaped text pool, so the JSON bytes are
assembled directly instead of going through `json.dumps` of a large object. The bytes are
exactly what `json.dumps(obj, ensure_ascii=False, separators=(",", ":"))` would give (checked
on a sample), i.e. what serde_json writes. Everything is a function of `--seed`.

    python -m bench.corpus --out /tmp/sessiond-bench/corpus --sessions 10000 --workspaces 200
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import math
import multiprocessing
import os
import random
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.support.agent_sim import chrono_time, compact, new_session
from tests.support.stats import percentile

GENERATOR_VERSION = 1
MANIFEST = "manifest.json"
ANCHOR = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
"""The newest corpus mtime; fixed so that a seed always gives the same bytes."""
SPREAD_DAYS = 180
MEDIAN_KB = 150.0
SIGMA = 1.3
CAP_MB = 40.0
ZIPF_S = 0.7
MIN_BYTES = 2048
BIG_WORKSPACE = "ws-big"

AGENTS = ("build",) * 8 + ("plan", "explore")
MODELS = ("zai/glm-5", "anthropic/claude-sonnet-4-5", "openai/gpt-5", "moonshot/kimi-k2")
TOOLS = ("bash", "read", "edit", "grep", "write", "glob")


@dataclass(frozen=True)
class Params:
    """What determines a corpus's bytes; a corpus is reused when these match its manifest."""

    sessions: int = 10_000
    workspaces: int = 200
    seed: int = 1
    scale: float = 1.0
    big_mb: float = 50.0
    median_kb: float = MEDIAN_KB
    sigma: float = SIGMA
    cap_mb: float = CAP_MB
    version: int = GENERATOR_VERSION


@dataclass(frozen=True)
class Planned:
    """One session to write."""

    index: int
    session_id: str
    workspace: str
    sessions_dir: str
    size: int
    mtime_ns: int


@dataclass
class Corpus:
    """A generated corpus as its manifest describes it."""

    root: str
    params: Params
    global_root: str
    home: str
    workspaces: list[dict[str, Any]] = field(default_factory=list)
    big: dict[str, Any] | None = None
    totals: dict[str, Any] = field(default_factory=dict)

    @property
    def data_home(self) -> str:
        """The XDG_DATA_HOME under which the agent's global root lies."""
        return os.path.dirname(self.global_root)

    def env(self, with_registry: bool = True) -> dict[str, str]:
        """An environment for processes run on the corpus: its own HOME, and the agent's global
        root (with the registry) when `with_registry`, else an empty one."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIOND_", "XDG_"))}
        env.pop("CODETETHER_DATA_DIR", None)
        env["HOME"] = self.home
        env["XDG_CONFIG_HOME"] = os.path.join(self.home, ".config")
        env["XDG_STATE_HOME"] = os.path.join(self.home, ".local", "state")
        env["XDG_DATA_HOME"] = (
            self.data_home if with_registry else os.path.join(self.home, "no-registry")
        )
        return env


# --- the text pool ---------------------------------------------------------------------------

_TEXT = (
    "session index resume daemon socket file path error value config build test cargo crate "
    "module function return result option string buffer stream thread async await future "
    "tokio serde json parse write read rename inotify watch event queue header window tail "
    "agent model tool call output input message content role user assistant system the a of "
    "to and in is it that for on with as this by from at be are was not or but"
)
_WORDS = tuple(_TEXT.split(" "))
_UNICODE = ("é", "ü", "✓", "→", "日本語", "Ω", "—", "ß", "…", "🙂")


def _line(rng: random.Random) -> str:
    kind = rng.random()
    words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 12))]
    if kind < 0.35:
        ident = "_".join(words[:2])
        arg = " ".join(words[2:5])
        indent = "    " * rng.randint(0, 3)
        return f'{indent}let {ident} = {words[0]}.{words[1]}(&{ident}, "{arg}")?;\n'
    if kind < 0.5:
        return (
            f"2026-07-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
            f":{rng.randint(0, 59):02d}Z INFO {words[0]}::{words[1]}: {' '.join(words[2:])}\n"
        )
    if kind < 0.65:
        return (
            f"src/{words[0]}/{words[1]}.rs:{rng.randint(1, 999)}:{rng.randint(1, 80)}:\t"
            f"{' '.join(words[2:])}\n"
        )
    if kind < 0.72:
        return f'{{"key": "{words[0]}", "re": "\\\\d+\\\\s*", "n": {rng.randint(0, 9999)}}}\n'
    if kind < 0.8:
        words.insert(rng.randrange(len(words)), rng.choice(_UNICODE))
    return " ".join(words).capitalize() + rng.choice((".", "?", "!", ":", ",")) + "\n"


class TextPool:
    """JSON-escaped text, sliced at line boundaries: any slice is a valid string body."""

    LINES = 16_384

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"pool/{seed}")
        escaped = [
            json.dumps(_line(rng), ensure_ascii=False)[1:-1].encode() for _ in range(self.LINES)
        ]
        self._lines = escaped + escaped  # doubled, so a slice may wrap around
        self._cum = [0]
        for line in self._lines:
            self._cum.append(self._cum[-1] + len(line))
        self.size = self._cum[self.LINES]

    def text(self, rng: random.Random, n: int) -> bytes:
        """About `n` bytes (at least one line) of escaped text starting at a random line."""
        parts: list[bytes] = []
        while n > self.size:  # longer than the pool: whole copies first
            parts.append(b"".join(self._lines[: self.LINES]))
            n -= self.size
        start = rng.randrange(self.LINES)
        end = bisect.bisect_left(self._cum, self._cum[start] + max(n, 1))
        parts.append(b"".join(self._lines[start:end]))
        return b"".join(parts)


# --- one session ------------------------------------------------------------------------------


def _lognormal(rng: random.Random, median: float, sigma: float, cap: float) -> int:
    return int(min(rng.lognormvariate(math.log(median), sigma), cap))


def _turn(rng: random.Random, pool: TextPool, call: int) -> tuple[list[bytes], bytes, int]:
    """One turn as `add_turn` shapes it: four messages and one tool use, pre-encoded."""
    call_id = f"call_{call}".encode()
    tool = rng.choice(TOOLS)
    args = {"command": " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 8)))}
    args_json = compact(json.dumps(args, ensure_ascii=False))  # a JSON string holding JSON
    user = pool.text(rng, _lognormal(rng, 150, 1.0, 8_000))
    thinking = pool.text(rng, _lognormal(rng, 300, 1.0, 16_000))
    output = pool.text(rng, _lognormal(rng, 3_000, 1.2, 256_000))
    answer = pool.text(rng, _lognormal(rng, 500, 1.0, 32_000))
    calls = b'"' + call_id + b'","name":"' + tool.encode() + b'"'
    messages = [
        b'{"role":"user","content":[{"type":"text","text":"%s"}]}' % user,
        b'{"role":"assistant","content":[{"type":"thinking","text":"%s","signature":null},'
        b'{"type":"tool_call","id":%s,"arguments":%s}]}' % (thinking, calls, args_json),
        b'{"role":"tool","content":[{"type":"tool_result","tool_call_id":"%s","content":"%s"}]}'
        % (call_id, output),
        b'{"role":"assistant","content":[{"type":"text","text":"%s"}]}' % answer,
    ]
    success = b"true" if rng.random() < 0.93 else b"false"
    tool_use = b'{"id":%s,"input":%s,"output":"%s","success":%s}' % (
        calls,
        args_json,
        pool.text(rng, 48),
        success,
    )
    return messages, tool_use, sum(map(len, messages)) + len(tool_use) + 5


_PAGES = b'"conversation","conversation","evidence","conversation"'


def session_bytes(plan: Planned, pool: TextPool, seed: int) -> tuple[bytes, dict[str, Any]]:
    """The compact JSON of one session (docs/agent-files.md, "The session document") of about
    `plan.size` bytes."""
    rng = random.Random(f"session/{seed}/{plan.index}")
    updated = dt.datetime.fromtimestamp(plan.mtime_ns / 1e9, dt.UTC) - dt.timedelta(
        milliseconds=rng.randint(1, 400)
    )
    created = updated - dt.timedelta(seconds=rng.lognormvariate(math.log(1800), 1.5))
    doc = new_session(
        plan.workspace,
        session_id=plan.session_id,
        title=None if rng.random() < 0.15 else " ".join(rng.choices(_WORDS, k=rng.randint(2, 9))),
        agent=rng.choice(AGENTS),
        model=rng.choice(MODELS),
        when=created,
    )
    doc["updated_at"] = chrono_time(updated)
    doc["metadata"]["provenance"]["provenance_id"] = "ctprov_" + rng.randbytes(16).hex()
    head = b"".join(
        (
            b'{"id":',
            compact(doc["id"]),
            b',"title":',
            compact(doc["title"]),
            b',"created_at":',
            compact(doc["created_at"]),
            b',"updated_at":',
            compact(doc["updated_at"]),
            b',"metadata":',
            compact(doc["metadata"]),
            b',"agent":',
            compact(doc["agent"]),
        )
    )
    messages: list[bytes] = []
    tool_uses: list[bytes] = []
    budget = plan.size - len(head) - 250
    while budget > 0 or not tool_uses:
        turn, tool_use, cost = _turn(rng, pool, len(tool_uses))
        messages.extend(turn)
        tool_uses.append(tool_use)
        budget -= cost
    prompt = len(messages) * rng.randint(300, 900)
    completion = prompt // rng.randint(5, 20)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cache_read_tokens": None if rng.random() < 0.5 else prompt // 2,
        "cache_write_tokens": None,
    }
    data = b"".join(
        (
            head,
            b',"messages":[',
            b",".join(messages),
            b'],"pages":[',
            b",".join([_PAGES] * len(tool_uses)),
            b'],"summary_index":',
            compact(doc["summary_index"]),
            b',"tool_uses":[',
            b",".join(tool_uses),
            b'],"usage":',
            compact(usage),
            b"}",
        )
    )
    return data, {"updated_at": doc["updated_at"]}


def check_round_trip(data: bytes) -> None:
    """The bytes are what the agent's serializer (compact, raw UTF-8) would write."""
    if compact(json.loads(data)) != data:
        raise AssertionError("generated session bytes are not canonical compact JSON")


# --- writing ----------------------------------------------------------------------------------

_POOL: TextPool | None = None
_SEED = 0
_REGISTRY = ""


def _init_worker(seed: int, registry: str) -> None:
    global _POOL, _SEED, _REGISTRY
    _POOL, _SEED, _REGISTRY = TextPool(seed), seed, registry


def write_session(plan: Planned) -> tuple[int, int]:
    """Save one session as `Session::save` does (docs/agent-files.md, "Saving"): tmp + rename,
    pointer, journal. Returns (index, file size)."""
    assert _POOL is not None
    data, info = session_bytes(plan, _POOL, _SEED)
    if plan.index % 997 == 0:
        check_round_trip(data)
    path = os.path.join(plan.sessions_dir, f"{plan.session_id}.json")
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.utime(tmp, ns=(plan.mtime_ns, plan.mtime_ns))
    os.rename(tmp, path)
    with open(os.path.join(_REGISTRY, f"{plan.session_id}.path"), "wb") as fh:
        fh.write(path.encode())
    at = compact(info["updated_at"])
    journal = (
        b'{"phase":"staged","txn":0,"at":' + at + b',"op":{"op":"save"}}\n'
        b'{"phase":"committed","txn":0,"at":' + at + b"}\n"
    )
    with open(os.path.join(plan.sessions_dir, f"{plan.session_id}.journal.jsonl"), "ab") as fh:
        fh.write(journal)
    return plan.index, len(data)


def _workspace_weights(rng: random.Random, count: int) -> list[float]:
    weights = [1.0 / (rank + 1) ** ZIPF_S for rank in range(count)]
    rng.shuffle(weights)
    return weights


def plan_corpus(root: str, params: Params) -> tuple[list[Planned], list[str]]:
    """Every session to write, in save order (oldest first), and the workspace folders."""
    rng = random.Random(f"plan/{params.seed}")
    base = os.path.join(root, "workspaces")
    names = [f"ws-{i:04d}" for i in range(params.workspaces)]
    weights = _workspace_weights(rng, params.workspaces)
    anchor_ns = int(ANCHOR.timestamp()) * 1_000_000_000
    spread_ns = SPREAD_DAYS * 86_400 * 1_000_000_000
    regular = params.sessions - (1 if params.big_mb > 0 else 0)
    plans: list[Planned] = []
    median = params.median_kb * 1024
    cap = params.cap_mb * 1024 * 1024
    for index in range(regular):
        name = rng.choices(names, weights)[0]
        size = max(MIN_BYTES, int(_lognormal(rng, median, params.sigma, cap) * params.scale))
        mtime_ns = anchor_ns - rng.randrange(1, spread_ns)
        session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        workspace = os.path.join(base, name)
        plans.append(
            Planned(index, session_id, workspace, _sessions_dir(workspace), size, mtime_ns)
        )
    if params.big_mb > 0:
        workspace = os.path.join(base, BIG_WORKSPACE)
        size = max(MIN_BYTES, int(params.big_mb * 1024 * 1024 * params.scale))
        session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        plans.append(
            Planned(regular, session_id, workspace, _sessions_dir(workspace), size, anchor_ns)
        )
        names.append(BIG_WORKSPACE)
    plans.sort(key=lambda p: p.mtime_ns)
    return plans, [os.path.join(base, n) for n in names]


def _sessions_dir(workspace: str) -> str:
    return os.path.join(workspace, ".codetether-agent", "sessions")


def _atomic_json(path: str, obj: Any, pretty: bool = False) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        if pretty:
            json.dump(obj, fh, indent=1, ensure_ascii=False)
        else:
            fh.write(compact(obj).decode())
    os.rename(tmp, path)


def add_corpus_options(parser: argparse.ArgumentParser, big_session: bool) -> None:
    """The options that choose a benchmark's corpus; those left out take the run's defaults
    (bench_resume.py and bench_client.py resolve them, --quick included)."""
    parser.add_argument("--corpus", help="corpus folder (generated there unless it matches)")
    parser.add_argument("--sessions", type=int, help="sessions in the corpus (default 10,000)")
    parser.add_argument("--workspaces", type=int, help="workspaces (default 200)")
    parser.add_argument("--scale", type=float, help="size factor for sessions (default 1)")
    if big_session:
        parser.add_argument("--big-mb", type=float, help="size of the one big session (default 50)")
    parser.add_argument("--seed", type=int, default=1)


def _jobs(requested: int | None) -> int:
    if requested:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _order_for_balance(plans: list[Planned]) -> Iterator[Planned]:
    # Biggest first so that no worker is left with a 40 MB file at the end.
    return iter(sorted(plans, key=lambda p: -p.size))


def generate(root: str, params: Params, jobs: int | None = None, quiet: bool = False) -> Corpus:
    """Write the corpus under `root` (which must be empty or a corpus of ours)."""
    started = time.monotonic()
    root = os.path.realpath(root)
    os.makedirs(root, exist_ok=True)
    _clear(root)
    global_root = os.path.join(root, "data", "codetether-agent")
    registry = os.path.join(global_root, "session-locations")
    home = os.path.join(root, "home")
    for folder in (registry, home):
        os.makedirs(folder, exist_ok=True)
    plans, workspaces = plan_corpus(root, params)
    for workspace in workspaces:
        os.makedirs(os.path.join(workspace, ".git"), exist_ok=True)
        os.makedirs(_sessions_dir(workspace), exist_ok=True)
    sizes: dict[int, int] = {}
    total = len(plans)
    done = 0
    last_report = time.monotonic()
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(_jobs(jobs), _init_worker, (params.seed, registry)) as pool:
        for index, size in pool.imap_unordered(write_session, _order_for_balance(plans), 8):
            sizes[index] = size
            done += 1
            if not quiet and time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                print(f"  corpus: {done}/{total} sessions written", file=sys.stderr)
    newest: dict[str, Planned] = {}
    counts: dict[str, int] = {}
    for plan in plans:  # save order: the last save of a workspace is its index entry
        counts[plan.workspace] = counts.get(plan.workspace, 0) + 1
        best = newest.get(plan.workspace)
        if best is None or (plan.mtime_ns, plan.session_id) > (best.mtime_ns, best.session_id):
            newest[plan.workspace] = plan
    corpus = Corpus(root=root, params=params, global_root=global_root, home=home)
    for workspace in workspaces:
        top = newest.get(workspace)
        if top is not None:
            _atomic_json(
                os.path.join(_sessions_dir(workspace), ".workspace_index.json"),
                {"entries": {workspace: top.session_id}},
            )
        entry = {
            "name": os.path.basename(workspace),
            "path": workspace,
            "sessions_dir": _sessions_dir(workspace),
            "sessions": counts.get(workspace, 0),
            "newest_id": top.session_id if top else None,
            "newest_bytes": sizes[top.index] if top else None,
        }
        if os.path.basename(workspace) == BIG_WORKSPACE:
            corpus.big = entry
        else:
            corpus.workspaces.append(entry)
    ordered = sorted(sizes.values())
    corpus.totals = {
        "sessions": len(ordered),
        "bytes": sum(ordered),
        "size_p50": percentile(ordered, 50),
        "size_p90": percentile(ordered, 90),
        "size_p99": percentile(ordered, 99),
        "size_max": ordered[-1],
        "size_mean": sum(ordered) // len(ordered),
        "generation_s": round(time.monotonic() - started, 1),
        "jobs": _jobs(jobs),
    }
    _write_manifest(corpus)
    return corpus


def _write_manifest(corpus: Corpus) -> None:
    manifest = {
        "params": asdict(corpus.params),
        "root": corpus.root,
        "global_root": corpus.global_root,
        "home": corpus.home,
        "totals": corpus.totals,
        "big": corpus.big,
        "workspaces": corpus.workspaces,
    }
    _atomic_json(os.path.join(corpus.root, MANIFEST), manifest, pretty=True)


def _clear(root: str) -> None:
    """Empty `root` of a previous corpus; refuse to touch a folder that is not one."""
    names = set(os.listdir(root))
    ours = {MANIFEST, "data", "home", "workspaces", MANIFEST + ".tmp"}
    if names - ours:
        raise SystemExit(
            f"corpus: {root} holds files that are not a corpus ({sorted(names - ours)[:5]}); "
            "give an empty or new folder"
        )
    if MANIFEST in names:
        os.unlink(os.path.join(root, MANIFEST))  # incomplete from here on
    for name in names - {MANIFEST}:
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def load(root: str) -> Corpus | None:
    """The corpus at `root` when its manifest is complete and readable."""
    try:
        with open(os.path.join(root, MANIFEST), encoding="utf-8") as fh:
            manifest = json.load(fh)
        corpus = Corpus(
            root=manifest["root"],
            params=Params(**manifest["params"]),
            global_root=manifest["global_root"],
            home=manifest["home"],
            workspaces=manifest["workspaces"],
            big=manifest["big"],
            totals=manifest["totals"],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if corpus.root != os.path.realpath(root):
        return None  # moved: the paths inside the files no longer hold
    return corpus


def ensure(
    root: str, params: Params, jobs: int | None = None, quiet: bool = False
) -> tuple[Corpus, bool]:
    """The corpus at `root` for `params`, generated unless a matching one is there.
    Returns it and whether it was reused."""
    existing = load(root)
    if existing is not None and existing.params == params and _looks_intact(existing):
        return existing, True
    return generate(root, params, jobs, quiet), False


def _looks_intact(corpus: Corpus) -> bool:
    entries = [*corpus.workspaces, *([corpus.big] if corpus.big else [])]
    for entry in entries[:: max(1, len(entries) // 20)]:
        newest = entry.get("newest_id")
        if newest and not os.path.isfile(os.path.join(entry["sessions_dir"], f"{newest}.json")):
            return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder of the corpus (created)")
    parser.add_argument("--sessions", type=int, default=Params.sessions)
    parser.add_argument("--workspaces", type=int, default=Params.workspaces)
    parser.add_argument("--seed", type=int, default=Params.seed)
    parser.add_argument(
        "--scale",
        type=float,
        default=Params.scale,
        help="multiply every session size by this (e.g. 0.05 for quick runs)",
    )
    parser.add_argument(
        "--big-mb",
        type=float,
        default=Params.big_mb,
        help="size of the one big session in ws-big before --scale (0: none)",
    )
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: cores)")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.workspaces < 1 or args.scale <= 0:
        parser.error("--sessions and --workspaces must be >= 1, --scale > 0")
    params = Params(
        sessions=args.sessions,
        workspaces=args.workspaces,
        seed=args.seed,
        scale=args.scale,
        big_mb=args.big_mb,
    )
    started = time.monotonic()
    corpus, reused = ensure(args.out, params, args.jobs)
    t = corpus.totals
    big = f" (+ {BIG_WORKSPACE})" if corpus.big else ""
    print(
        f"{'reused' if reused else 'generated'} corpus {corpus.root}: {t['sessions']} sessions, "
        f"{len(corpus.workspaces)} workspaces{big}"
        f"\n  {t['bytes'] / 2**30:.2f} GiB; size p50 {t['size_p50'] / 1024:.0f} KiB, "
        f"p90 {t['size_p90'] / 1024:.0f} KiB, p99 {t['size_p99'] / 2**20:.1f} MiB, "
        f"max {t['size_max'] / 2**20:.1f} MiB, mean {t['size_mean'] / 1024:.0f} KiB"
        f"\n  took {time.monotonic() - started:.1f} s"
        + ("" if reused else f" ({t['jobs']} processes)")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
