"""The client's fallback scan (sessionctl.scan) and the CLI's use of it, on real files."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sessionctl import scan
from sessionctl.document import SESSION_KEYS

from tests.support.agent_sim import (
    AgentSim,
    add_turn,
    make_workspace,
    new_session,
    write_agent_litter,
)

T0 = 1_780_000_000_000_000_000  # an mtime in ns, so that ordering never depends on the clock


@pytest.fixture
def base(tmp_path: Path) -> str:
    return os.path.realpath(tmp_path)


@pytest.fixture
def env(base: str) -> dict[str, str]:
    os.makedirs(os.path.join(base, "home"))
    return {"HOME": os.path.join(base, "home"), "XDG_DATA_HOME": os.path.join(base, "xdg")}


@pytest.fixture
def sim(env: dict[str, str]) -> AgentSim:
    return AgentSim(global_root=os.path.join(env["XDG_DATA_HOME"], "codetether-agent"))


def save(sim: AgentSim, folder: str, directory: str | None, mtime_ns: int, **kw: Any) -> str:
    """Save a fresh session for `directory` with a given mtime; return its id."""
    session = new_session(directory, **kw)
    sim.save(folder, session, mtime_ns=mtime_ns)
    return session["id"]


def set_mtime(path: str, mtime_ns: int) -> None:
    os.utime(path, ns=(mtime_ns, mtime_ns))


def write(path: str, data: bytes, mtime_ns: int) -> None:
    Path(path).write_bytes(data)
    set_mtime(path, mtime_ns)


# --- resume ------------------------------------------------------------------------------------


def test_newest_mtime_wins_not_updated_at(base: str, env: dict[str, str], sim: AgentSim) -> None:
    ws, folder = make_workspace(base, "proj")
    save(sim, folder, ws, T0 + 2, session_id="older-file")
    save(sim, folder, ws, T0 + 1, session_id="oldest-file")
    # updated_at says nothing to the agent's scan: only the file's mtime counts.
    session = new_session(ws, session_id="newer-file")
    session["updated_at"] = "2001-01-01T00:00:00Z"
    sim.save(folder, session, mtime_ns=T0 + 3)

    answer = scan.scan_resume(ws, env=env)
    assert answer["session_id"] == "newer-file"
    assert answer["source"] == "scan"
    assert answer["path"] == os.path.join(folder, "newer-file.json")
    assert answer["header"]["mtime_ns"] == T0 + 3
    assert answer["header"]["file_bytes"] == os.path.getsize(answer["path"])
    assert "session" not in answer


def test_equal_mtime_greater_file_name_wins(base: str, env: dict[str, str], sim: AgentSim) -> None:
    ws, folder = make_workspace(base, "a-proj")
    _, far_folder = make_workspace(base, "z-far")  # its paths sort after the workspace's
    for session_id in ("bbbb", "abcd"):
        save(sim, folder, ws, T0, session_id=session_id)
    save(sim, far_folder, ws, T0, session_id="aaaa")
    assert scan.scan_resume(ws, env=env)["session_id"] == "bbbb"


def test_codex_import_counts_by_its_mtime(base: str, env: dict[str, str], sim: AgentSim) -> None:
    ws, folder = make_workspace(base, "proj")
    save(sim, folder, ws, T0, session_id="native")
    path = sim.import_codex(folder, new_session(ws, session_id="codex-import"))
    set_mtime(path, T0 + 1)
    assert scan.scan_resume(ws, env=env)["session_id"] == "codex-import"
    set_mtime(path, T0 - 1)
    assert scan.scan_resume(ws, env=env)["session_id"] == "native"


def test_garbage_and_agent_litter_are_skipped(
    base: str, env: dict[str, str], sim: AgentSim
) -> None:
    ws, folder = make_workspace(base, "proj")
    good = save(sim, folder, ws, T0, session_id="good")
    write_agent_litter(folder, good)
    no_shared = new_session(ws, session_id="no-shared")
    del no_shared["metadata"]["shared"]
    garbage = {
        "junk.json": b"not json at all " + ws.encode(),
        "latin1.json": b'{"id":"\xff"} ' + ws.encode(),
        "no-shared.json": json.dumps(no_shared).encode(),
        "nan.json": json.dumps(new_session(ws, session_id="nan")).replace("0.35", "NaN").encode(),
        "array.json": json.dumps([ws]).encode(),
        "empty.json": b"",
    }
    for name, data in garbage.items():
        write(os.path.join(folder, name), data, T0 + 10)
    for name in os.listdir(folder):
        if name != "good.json" and os.path.isfile(os.path.join(folder, name)):
            set_mtime(os.path.join(folder, name), T0 + 20)

    assert scan.scan_resume(ws, env=env)["session_id"] == "good"
    listing = scan.scan_list(ws, env=env)
    assert [h["id"] for h in listing["sessions"]] == ["good"]
    assert listing["total"] == 1


def test_prefilter_false_positive_is_rejected_by_directory(
    base: str, env: dict[str, str], sim: AgentSim
) -> None:
    ws, folder = make_workspace(base, "proj")
    save(sim, folder, ws, T0, session_id="mine")
    # Newer, names the workspace in its transcript, but belongs to a sub-folder.
    other = new_session(os.path.join(ws, "sub"), session_id="mentions-ws")
    other["messages"].append({"role": "user", "content": [{"type": "text", "text": ws}]})
    sim.save(folder, other, mtime_ns=T0 + 1)
    assert scan.scan_resume(ws, env=env)["session_id"] == "mine"
    assert scan.scan_resume(os.path.join(ws, "sub"), env=env)["session_id"] == "mentions-ws"


def test_workspace_asked_through_a_symlink_resolves(
    base: str, env: dict[str, str], sim: AgentSim
) -> None:
    ws, folder = make_workspace(base, "real")
    link = os.path.join(base, "link")
    os.symlink(ws, link)
    save(sim, folder, ws, T0, session_id="mine")
    save(sim, folder, "/elsewhere", T0 + 1, session_id="theirs")
    answer = scan.scan_resume(link, env=env)
    assert answer["session_id"] == "mine"
    assert answer["header"]["directory"] == ws


def test_symlink_spelling_of_directory_is_the_blind_spot(
    base: str, env: dict[str, str], sim: AgentSim
) -> None:
    ws, folder = make_workspace(base, "real")
    link = os.path.join(base, "link")
    os.symlink(ws, link)
    save(sim, folder, link, T0 + 1, session_id="via-link")
    # One candidate: no prefilter, so canonicalize(directory) == ws accepts it.
    assert scan.scan_resume(ws, env=env)["session_id"] == "via-link"

    save(sim, folder, ws, T0, session_id="via-real")
    # Two candidates: the newer one lacks the canonical path's bytes and is missed, as the
    # agent misses it; listing applies no prefilter and sees both.
    assert scan.scan_resume(ws, env=env)["session_id"] == "via-real"
    assert scan.scan_resume(link, env=env)["session_id"] == "via-real"
    assert {h["id"] for h in scan.scan_list(ws, env=env)["sessions"]} == {"via-link", "via-real"}


def test_no_session_for_workspace(base: str, env: dict[str, str], sim: AgentSim) -> None:
    ws, folder = make_workspace(base, "proj")
    with pytest.raises(scan.NotFound):
        scan.scan_resume(ws, env=env)
    save(sim, folder, os.path.join(base, "other"), T0)
    with pytest.raises(scan.NotFound):
        scan.scan_resume(ws, env=env)
    with pytest.raises(scan.UsageError):
        scan.scan_resume("relative/path", env=env)


def test_sessions_from_data_dir_and_registry(base: str, env: dict[str, str]) -> None:
    ws, _ = make_workspace(base, "proj")
    data_dir = os.path.join(base, "data")
    env = {**env, "CODETETHER_DATA_DIR": data_dir}
    sim = AgentSim(global_root=data_dir)
    save(sim, os.path.join(data_dir, "sessions"), ws, T0, session_id="global")
    _, far_folder = make_workspace(base, "far")
    save(sim, far_folder, ws, T0 + 1, session_id="far-but-registered")
    assert scan.scan_resume(ws, env=env)["session_id"] == "far-but-registered"
    assert scan.scan_list(ws, env=env)["total"] == 2


# --- windows -----------------------------------------------------------------------------------


def windowed_fixture(base: str, sim: AgentSim, turns: int = 3) -> tuple[str, dict[str, Any]]:
    ws, folder = make_workspace(base, "proj")
    session = new_session(ws, session_id="long")
    rng = random.Random(7)
    for _ in range(turns):
        add_turn(session, rng)
    sim.save(folder, session, mtime_ns=T0)
    return ws, session


def test_window_cuts_messages_and_tool_uses(base: str, env: dict[str, str], sim: AgentSim) -> None:
    ws, session = windowed_fixture(base, sim)
    answer = scan.scan_resume(ws, window=2, env=env)
    kept = answer["session"]
    assert list(kept) == list(SESSION_KEYS)
    assert kept["messages"] == session["messages"][-2:]
    assert kept["tool_uses"] == session["tool_uses"][-2:]
    assert answer["dropped"] == (12 - 2) + (3 - 2)
    assert answer["file_bytes"] == answer["header"]["file_bytes"]
    assert answer["header"]["message_count"] == 12  # the header describes the whole file
    # Pages are recomputed for the kept messages: a tool result, then an answer.
    assert kept["pages"] == ["evidence", "conversation"]


def test_window_zero_and_window_larger_than_session(
    base: str, env: dict[str, str], sim: AgentSim
) -> None:
    ws, session = windowed_fixture(base, sim)
    empty = scan.scan_resume(ws, window=0, env=env)
    assert empty["session"]["messages"] == [] and empty["session"]["tool_uses"] == []
    assert empty["session"]["pages"] == []
    assert empty["dropped"] == 15
    whole = scan.scan_resume(ws, window=1000, env=env)
    assert whole["dropped"] == 0
    assert whole["session"] == session
    with pytest.raises(scan.UsageError):
        scan.scan_resume(ws, window=-1, env=env)


def test_pages_recomputed_when_file_pages_do_not_match(
    base: str, env: dict[str, str], sim: AgentSim
) -> None:
    ws, folder = make_workspace(base, "proj")
    session = new_session(ws, session_id="legacy")
    add_turn(session, random.Random(1))
    session["pages"] = []  # an older file without pages
    sim.save(folder, session, mtime_ns=T0)
    answer = scan.scan_get("legacy", window=10, workspace=ws, env=env)
    assert answer["session"]["pages"] == [
        "conversation",
        "conversation",
        "evidence",
        "conversation",
    ]


# --- list --------------------------------------------------------------------------------------


def test_list_orders_by_updated_at_instant(base: str, env: dict[str, str], sim: AgentSim) -> None:
    ws, folder = make_workspace(base, "proj")
    # As strings "14:00:00Z" > "14:00:00.500Z"; as instants it is the other way round.
    times = {
        "a": "2026-08-01T14:00:00Z",
        "b": "2026-08-01T14:00:00.500Z",
        "c": "2026-08-01T13:59:59.999999999Z",
        "d": "2026-08-02T00:00:00Z",
        "e": "2026-08-01T14:00:00Z",
    }
    mtimes = {"a": T0 + 5, "b": T0 + 4, "c": T0 + 3, "d": T0 + 2, "e": T0 + 6}
    for session_id, updated_at in times.items():
        session = new_session(ws, session_id=session_id)
        session["updated_at"] = updated_at
        sim.save(folder, session, mtime_ns=mtimes[session_id])

    listing = scan.scan_list(ws, env=env)
    assert [h["id"] for h in listing["sessions"]] == ["d", "b", "e", "a", "c"]
    assert listing["total"] == 5
    page = scan.scan_list(ws, limit=2, offset=1, env=env)
    assert [h["id"] for h in page["sessions"]] == ["b", "e"]
    assert page["total"] == 5
    assert scan.scan_list(ws, offset=9, env=env)["sessions"] == []
    empty_page = {"ok": True, "source": "scan", "sessions": [], "total": 5}
    assert scan.scan_list(ws, limit=0, env=env) == empty_page


def test_list_workspace_filter_and_all(base: str, env: dict[str, str], sim: AgentSim) -> None:
    ws, folder = make_workspace(base, "proj")
    save(sim, folder, ws, T0, session_id="top")
    save(sim, folder, os.path.join(ws, "sub"), T0, session_id="sub")  # another workspace
    other_ws, other_folder = make_workspace(base, "other")
    save(sim, other_folder, other_ws, T0, session_id="other")
    assert [h["id"] for h in scan.scan_list(ws, env=env)["sessions"]] == ["top"]
    everything = scan.scan_list(None, env=env)
    assert sorted(h["id"] for h in everything["sessions"]) == ["other", "sub", "top"]
    header = next(h for h in everything["sessions"] if h["id"] == "top")
    assert header["path"] == os.path.join(folder, "top.json")
    assert header["directory"] == ws


# --- get ---------------------------------------------------------------------------------------


def test_get_by_id_local_and_through_registry(
    base: str, env: dict[str, str], sim: AgentSim
) -> None:
    ws, folder = make_workspace(base, "proj")
    save(sim, folder, ws, T0, session_id="local")
    far_ws, far_folder = make_workspace(base, "far")
    save(sim, far_folder, far_ws, T0, session_id="far")
    assert scan.scan_get("local", workspace=ws, env=env)["path"] == os.path.join(
        folder, "local.json"
    )
    answer = scan.scan_get("far", workspace=ws, env=env)
    assert answer["path"] == os.path.join(far_folder, "far.json")
    assert answer["header"]["directory"] == far_ws


def test_get_newest_copy_and_id_must_match(base: str, env: dict[str, str], sim: AgentSim) -> None:
    ws, folder = make_workspace(base, "proj")
    _, far_folder = make_workspace(base, "far")
    save(sim, folder, ws, T0 + 1, session_id="twice")
    save(sim, far_folder, ws, T0 + 2, session_id="twice")
    assert scan.scan_get("twice", workspace=ws, env=env)["path"] == os.path.join(
        far_folder, "twice.json"
    )
    # A file named for one id holding another is no answer for either.
    mislabeled = new_session(ws, session_id="inside")
    write(os.path.join(folder, "outside.json"), json.dumps(mislabeled).encode(), T0)
    with pytest.raises(scan.NotFound):
        scan.scan_get("outside", workspace=ws, env=env)
    with pytest.raises(scan.NotFound):
        scan.scan_get("inside", workspace=ws, env=env)


@pytest.mark.parametrize("bad_id", ["../../x", "", "a/b", "a.json", "x" * 129])
def test_get_rejects_invalid_ids(base: str, env: dict[str, str], bad_id: str) -> None:
    with pytest.raises(scan.UsageError):
        scan.scan_get(bad_id, workspace=base, env=env)


# --- the CLI, run as the user runs it ------------------------------------------------------------


NO_DAEMON = ("--socket", "/nonexistent")


def run_cli(env: dict[str, str], cwd: str, *args: str) -> subprocess.CompletedProcess[str]:
    hidden = ("CODETETHER_DATA_DIR", "SESSIOND_SOCKET", "XDG_RUNTIME_DIR")
    full_env = {k: v for k, v in os.environ.items() if k not in hidden} | env
    command = [sys.executable, "-m", "sessionctl", *args]
    return subprocess.run(
        command, env=full_env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_cli_resume_falls_back_to_the_scan(base: str, env: dict[str, str], sim: AgentSim) -> None:
    ws, folder = make_workspace(base, "proj")
    session_id = save(sim, folder, ws, T0)
    done = run_cli(env, base, "resume", *NO_DAEMON, "--workspace", ws)
    assert (done.returncode, done.stdout) == (0, session_id + "\n")

    # Common options before the subcommand, a relative workspace, --json.
    done = run_cli(env, base, *NO_DAEMON, "resume", "--workspace", "proj", "--json")
    assert done.returncode == 0
    answer = json.loads(done.stdout)
    assert answer["source"] == "scan" and answer["session_id"] == session_id

    done = run_cli(env, ws, "resume", *NO_DAEMON, "--window", "0", "--json")
    assert json.loads(done.stdout)["dropped"] == 0

    done = run_cli(env, base, "resume", *NO_DAEMON, "--no-fallback", "--workspace", ws)
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.startswith("sessionctl: ")


def test_cli_get_list_and_errors(base: str, env: dict[str, str], sim: AgentSim) -> None:
    ws, folder = make_workspace(base, "proj")
    session_id = save(sim, folder, ws, T0, title="first try")

    done = run_cli(env, ws, "get", session_id, *NO_DAEMON)
    assert done.returncode == 0
    assert f"id: {session_id}" in done.stdout.splitlines()
    assert "title: first try" in done.stdout.splitlines()

    done = run_cli(env, ws, "get", "no-such-session", *NO_DAEMON)
    assert done.returncode == 1 and done.stderr.startswith("sessionctl: ")
    assert run_cli(env, ws, "get", "../../x", *NO_DAEMON).returncode == 2

    done = run_cli(env, ws, "list", *NO_DAEMON)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["ID", "UPDATED", "MESSAGES", "TITLE"]
    assert lines[1].split()[0] == session_id and lines[1].endswith("first try")
    listing = json.loads(run_cli(env, base, "list", "--all", "--json", *NO_DAEMON).stdout)
    assert listing["total"] == 1 and listing["source"] == "scan"

    assert run_cli(env, ws, "status", *NO_DAEMON).returncode == 3
    assert run_cli(env, ws, "list", "--all", "--workspace", ws).returncode == 2
