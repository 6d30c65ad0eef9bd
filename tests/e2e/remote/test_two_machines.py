"""Two machines sharing one bucket: sessions saved on "laptop" are listed and restored on
"desk" (docs/remote.md). Two real daemons with their own homes, state folders and machine
names talk to one moto server over HTTP on 127.0.0.1, as two real machines would.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sessionctl.client import DaemonError

from tests.support.agent_sim import AgentSim, add_turn, big_session, compact, new_session
from tests.support.agent_store import AgentStore, rows_as_sessions
from tests.support.daemon import DaemonFactory, DaemonProcess, wait_for
from tests.support.s3proxy import RecordingProxy
from tests.support.s3server import S3Server

PREFIX = "hist/"


@dataclass
class Machine:
    name: str
    home: str
    workspace: str
    sessions_dir: str
    sim: AgentSim
    daemon: DaemonProcess
    env: dict[str, str]

    def restarted(self, daemons: DaemonFactory) -> DaemonProcess:
        """A new daemon of this machine (same home, state folder and name)."""
        self.daemon = daemons(
            sessions_dirs=[self.sessions_dir],
            discover=False,
            env=self.env,
            name=self.name,
            env_base=self.home,
        ).start()
        return self.daemon


def _machine(
    daemons: DaemonFactory,
    base: str,
    name: str,
    server: S3Server,
    bucket: str,
    endpoint: str | None = None,
) -> Machine:
    home = os.path.join(base, name)
    workspace = os.path.join(home, "proj")
    sessions_dir = os.path.join(workspace, ".codetether-agent", "sessions")
    os.makedirs(sessions_dir)
    config = Path(home, "xdg-config", "sessiond")
    config.mkdir(parents=True)
    (config / "config.toml").write_text(
        "[s3]\nmax_attempts = 2\nbackoff_base_s = 0.1\nbackoff_max_s = 1.0\n"
        "connect_timeout_s = 2.0\nmultipart_threshold = 5242880\nmultipart_chunksize = 5242880\n"
    )
    env = {**server.history_env(bucket, PREFIX, endpoint), "SESSIOND_MACHINE_NAME": name}
    daemon = daemons(
        sessions_dirs=[sessions_dir], discover=False, env=env, name=name, env_base=home
    )
    sim = AgentSim(os.path.join(home, "global"), write_pointer=False)
    return Machine(name, home, workspace, sessions_dir, sim, daemon, env)


@pytest.fixture
def pair(
    daemons: DaemonFactory, base: str, s3_server: S3Server, s3_bucket: str
) -> Iterator[tuple[Machine, Machine]]:
    laptop = _machine(daemons, base, "laptop", s3_server, s3_bucket)
    desk = _machine(daemons, base, "desk", s3_server, s3_bucket)
    laptop.daemon.start()
    desk.daemon.start()
    yield laptop, desk


def flush(machine: Machine) -> None:
    result = machine.daemon.client(timeout=120).flush(timeout=100)
    assert result["failed"] == 0, (result, machine.daemon.client().status()["uploads"])


def uploaded(machine: Machine, session: dict[str, Any]) -> None:
    """Save `session` as the agent does, make the daemon see it, and flush every upload."""
    machine.sim.save(machine.sessions_dir, session)
    machine.daemon.client().sync()
    flush(machine)


def tool_session(directory: str, turns: int, seed: int) -> dict[str, Any]:
    session = new_session(directory, title="réparer le cache ✓ 日本語")
    rng = random.Random(seed)
    for _ in range(turns):
        add_turn(session, rng)
    return session


def moved(session: dict[str, Any], directory: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(session))
    copy["metadata"]["directory"] = directory
    return copy


def restore(machine: Machine, session_id: str, **fields: Any) -> dict[str, Any]:
    return machine.daemon.client(timeout=120).restore(session_id, **fields)


def leftovers(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder) if n.endswith(".tmp"))


@pytest.mark.slow
def test_sessions_saved_on_laptop_are_listed_and_restored_on_desk(
    pair: tuple[Machine, Machine],
) -> None:
    laptop, desk = pair
    small = tool_session(laptop.workspace, 5, seed=1)
    plain = new_session(laptop.workspace, title="empty")
    big = big_session(laptop.workspace, 7, title="big")  # over the 5 MiB multipart threshold
    codex = tool_session(laptop.workspace, 3, seed=2)
    for session in (small, plain, big):
        laptop.sim.save(laptop.sessions_dir, session)
    laptop.sim.import_codex(laptop.sessions_dir, codex)  # pretty, written in place
    laptop.daemon.client().sync()
    flush(laptop)

    listed = desk.daemon.client(timeout=60).remote_list()
    by_id = {h["id"]: h for h in listed["sessions"]}
    ids = [small["id"], plain["id"], big["id"], codex["id"]]
    assert set(ids) <= set(by_id), listed
    assert {by_id[i]["machine"] for i in ids} == {"laptop"}
    assert by_id[small["id"]]["title"] == small["title"]
    assert by_id[small["id"]]["tool_use_count"] == len(small["tool_uses"])
    assert listed["unreadable"] == [] and listed["shared_names"] == []
    updated = [h["updated_at"] for h in listed["sessions"]]
    assert updated == sorted(updated, reverse=True)

    target = os.path.join(desk.home, "elsewhere", "work")
    os.makedirs(target)
    os.makedirs(os.path.join(target, ".git"))
    folder = os.path.join(target, ".codetether-agent", "sessions")
    for session in (small, plain, big, codex):
        answer = restore(desk, session["id"], workspace=target)
        assert answer["action"] == "created" and answer["machine"] == "laptop"
        path = os.path.join(folder, session["id"] + ".json")
        assert answer["path"] == path
        data = Path(path).read_bytes()
        if session is codex:  # pretty at the source: equal as JSON
            assert json.loads(data) == moved(session, target)
        else:  # compact: byte for byte, but for the directory
            assert data == compact(moved(session, target))
        got = desk.daemon.client().get(session["id"])  # indexed before the answer
        assert got["path"] == path
        assert desk.daemon.client().resume(target)["session_id"] == session["id"]
    assert leftovers(folder) == []

    # Again: the same bytes are there.
    before = Path(folder, small["id"] + ".json").read_bytes()
    assert restore(desk, small["id"], workspace=target)["action"] == "unchanged"
    # A different local copy is refused and left as it is.
    other = moved(small, target)
    other["title"] = "changed here"
    Path(folder, small["id"] + ".json").write_bytes(compact(other))
    with pytest.raises(DaemonError) as refused:
        restore(desk, small["id"], workspace=target)
    assert refused.value.code == "bad_request" and "differs" in refused.value.message
    assert Path(folder, small["id"] + ".json").read_bytes() == compact(other) != before

    # A dry run writes nothing, not even the sessions folder.
    dry = os.path.join(desk.home, "dry")
    os.makedirs(dry)
    answer = restore(desk, big["id"], workspace=dry, dry_run=True)
    assert answer["action"] == "created" and answer["dry_run"] is True
    assert os.listdir(dry) == []


def test_corrupt_or_missing_objects_fail_cleanly(
    pair: tuple[Machine, Machine], s3_server: S3Server, s3_bucket: str
) -> None:
    laptop, desk = pair
    session = tool_session(laptop.workspace, 4, seed=3)
    uploaded(laptop, session)
    store = s3_server.client()
    keys = [
        item["Key"]
        for item in store.list_objects_v2(Bucket=s3_bucket, Prefix=PREFIX + session["id"])[
            "Contents"
        ]
    ]
    head = next(k for k in keys if k.endswith("/head.json"))
    tool_uses = next(k for k in keys if k.endswith("/tool_uses.jsonl"))
    target = os.path.join(desk.home, "work")
    os.makedirs(target)
    folder = os.path.join(target, ".codetether-agent", "sessions")

    good = store.get_object(Bucket=s3_bucket, Key=head)["Body"].read()
    store.put_object(Bucket=s3_bucket, Key=head, Body=good.replace(b"usage", b"usagE"))
    with pytest.raises(DaemonError) as corrupt:
        restore(desk, session["id"], workspace=target)
    assert corrupt.value.code == "unavailable" and "corrupt" in corrupt.value.message
    store.put_object(Bucket=s3_bucket, Key=head, Body=good)
    store.delete_object(Bucket=s3_bucket, Key=tool_uses)
    with pytest.raises(DaemonError) as missing:
        restore(desk, session["id"], workspace=target)
    assert missing.value.code == "unavailable" and "missing" in missing.value.message
    assert not os.path.exists(os.path.join(folder, session["id"] + ".json"))
    assert leftovers(folder) == []

    with pytest.raises(DaemonError) as no_workspace:
        restore(desk, session["id"], workspace=os.path.join(desk.home, "nope"))
    assert "does not exist" in no_workspace.value.message
    with pytest.raises(DaemonError) as unknown:
        restore(desk, "no-such-session")
    assert unknown.value.code == "not_found"


def test_a_folder_that_cannot_be_written_is_refused_and_left_empty(
    pair: tuple[Machine, Machine],
) -> None:
    laptop, desk = pair
    session = tool_session(laptop.workspace, 2, seed=4)
    uploaded(laptop, session)
    # A file where the agent's folder would be: no user can write a sessions folder there.
    blocked = os.path.join(desk.home, "blocked")
    os.makedirs(blocked)
    Path(blocked, ".codetether-agent").write_text("not a folder")
    with pytest.raises(DaemonError) as refused:
        restore(desk, session["id"], workspace=blocked)
    assert refused.value.code == "bad_request" and "Not a directory" in refused.value.message
    assert os.listdir(blocked) == [".codetether-agent"]
    # The agent is saving that session there right now (its .tmp exists): left alone.
    busy = os.path.join(desk.home, "busy")
    folder = os.path.join(busy, ".codetether-agent", "sessions")
    os.makedirs(folder)
    Path(folder, session["id"] + ".json.tmp").write_text("the agent's")
    with pytest.raises(DaemonError):
        restore(desk, session["id"], workspace=busy)
    assert os.listdir(folder) == [session["id"] + ".json.tmp"]
    assert Path(folder, session["id"] + ".json.tmp").read_text() == "the agent's"
    if os.geteuid() != 0:  # root writes into any folder
        locked = os.path.join(desk.home, "locked")
        folder = os.path.join(locked, ".codetether-agent", "sessions")
        os.makedirs(folder)
        os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)
        try:
            with pytest.raises(DaemonError) as denied:
                restore(desk, session["id"], workspace=locked)
            assert "cannot write" in denied.value.message
            assert os.listdir(folder) == []
        finally:
            os.chmod(folder, 0o700)


def test_a_bucket_that_is_down_at_restore_leaves_nothing(
    daemons: DaemonFactory, base: str, fresh_s3_server: S3Server
) -> None:
    fresh_s3_server.create_bucket("outage")
    laptop = _machine(daemons, base, "laptop", fresh_s3_server, "outage")
    desk = _machine(daemons, base, "desk", fresh_s3_server, "outage")
    laptop.daemon.start()
    desk.daemon.start()
    session = tool_session(laptop.workspace, 3, seed=5)
    uploaded(laptop, session)
    assert restore(desk, session["id"], workspace=desk.workspace, dry_run=True)["action"] == (
        "created"
    )
    fresh_s3_server.stop()
    desk.daemon.allowed_errors |= {"upload_failed"}
    laptop.daemon.allowed_errors |= {"upload_failed"}
    with pytest.raises(DaemonError) as down:
        restore(desk, session["id"], workspace=desk.workspace)
    assert down.value.code == "unavailable" and "reach" in down.value.message
    assert not os.path.exists(os.path.join(desk.sessions_dir, session["id"] + ".json"))
    assert leftovers(desk.sessions_dir) == []
    fresh_s3_server.start()


@pytest.mark.slow
def test_sigkill_of_laptop_during_uploads_then_restart_and_flush(
    pair: tuple[Machine, Machine], daemons: DaemonFactory
) -> None:
    laptop, desk = pair
    sessions = [tool_session(laptop.workspace, 3, seed=10 + n) for n in range(20)]
    for session in sessions:
        laptop.sim.save(laptop.sessions_dir, session)
    laptop.daemon.client().sync()
    wait_for(lambda: laptop.daemon.events_named("upload_done"), 60, "a first upload")
    laptop.daemon.kill()  # somewhere in the uploads
    laptop.restarted(daemons)
    flush(laptop)
    listed = {h["id"] for h in desk.daemon.client().remote_list(limit=1000)["sessions"]}
    assert {s["id"] for s in sessions} <= listed
    for session in sessions:
        answer = restore(desk, session["id"], workspace=desk.workspace)
        data = Path(answer["path"]).read_bytes()
        assert data == compact(moved(session, desk.workspace))


def test_remote_list_filters_and_reports_an_unreadable_catalog(
    pair: tuple[Machine, Machine], s3_server: S3Server, s3_bucket: str
) -> None:
    laptop, desk = pair
    mine = tool_session(laptop.workspace, 1, seed=20)
    theirs = tool_session(desk.workspace, 1, seed=21)
    laptop.sim.save(laptop.sessions_dir, mine)
    desk.sim.save(desk.sessions_dir, theirs)
    for machine in (laptop, desk):
        machine.daemon.client().sync()
        flush(machine)
    client = desk.daemon.client()
    assert [h["id"] for h in client.remote_list(machine="laptop")["sessions"]] == [mine["id"]]
    only = client.remote_list(workspace=desk.workspace)["sessions"]
    assert [(h["id"], h["machine"]) for h in only] == [(theirs["id"], "desk")]
    s3_server.client().put_object(
        Bucket=s3_bucket,
        Key=PREFIX + ".sessiond/catalogs/broken/" + "0" * 32 + ".json.gz",
        Body=b"{",
    )
    answer = client.remote_list()
    assert [u["machine"] for u in answer["unreadable"]] == ["broken"]
    assert {h["id"] for h in answer["sessions"]} == {mine["id"], theirs["id"]}


def _bucket_requests(server: S3Server, bucket: str) -> list[str]:
    assert server.log_path is not None
    text = Path(server.log_path).read_text(errors="replace")
    return [line for line in text.splitlines() if f" /{bucket}/" in line or f" /{bucket}?" in line]


@pytest.mark.slow
def test_remote_list_of_500_sessions_on_two_machines_costs_three_requests(
    pair: tuple[Machine, Machine], s3_server: S3Server, s3_bucket: str
) -> None:
    laptop, desk = pair
    for machine in (laptop, desk):
        for number in range(250):
            session = new_session(machine.workspace, title=f"{machine.name} {number}")
            session["messages"].append(
                {"role": "user", "content": [{"type": "text", "text": "hi"}]}
            )
            machine.sim.save(machine.sessions_dir, session)
        machine.daemon.client().sync()
    for machine in (laptop, desk):
        flush(machine)
    before = len(_bucket_requests(s3_server, s3_bucket))
    answer = desk.daemon.client(timeout=60).remote_list(limit=1000)
    made = _bucket_requests(s3_server, s3_bucket)[before:]
    assert answer["total"] == 500 and len(answer["sessions"]) == 500
    assert {m["machine"]: m["sessions"] for m in answer["machines"]} == {"laptop": 250, "desk": 250}
    print(f"remote_list of 500 sessions on 2 machines: {len(made)} requests at the server")
    assert len(made) == answer["requests"] == 3, made  # one listing, one GET per catalog


@pytest.mark.slow
def test_one_appended_message_on_a_large_session_costs_its_bytes(
    daemons: DaemonFactory, base: str, s3_server: S3Server, s3_bucket: str
) -> None:
    with RecordingProxy(s3_server.port) as proxy:
        laptop = _machine(daemons, base, "laptop", s3_server, s3_bucket, proxy.endpoint)
        desk = _machine(daemons, base, "desk", s3_server, s3_bucket)
        laptop.daemon.start()
        desk.daemon.start()
        session = big_session(laptop.workspace, 8, title="big")
        rng = random.Random(9)
        for _ in range(3):
            add_turn(session, rng)
        uploaded(laptop, session)
        sent_before = proxy.sent
        message = {"role": "user", "content": [{"type": "text", "text": "one more ✓"}]}
        session["messages"].append(message)
        session["pages"].append("user")
        uploaded(laptop, session)
        on_wire = proxy.sent - sent_before
        size = len(compact(session))
        print(f"one appended message on a {size} byte session: {on_wire} bytes sent")
        assert on_wire < 64 * 1024, on_wire  # the file is 8 MiB
        answer = restore(desk, session["id"], workspace=desk.workspace)
        assert Path(answer["path"]).read_bytes() == compact(moved(session, desk.workspace))


def _cli(machine: Machine, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**machine.daemon.env, "SESSIOND_SOCKET": machine.daemon.socket_path}
    return subprocess.run(
        [sys.executable, "-m", "sessionctl", "--timeout", "60", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_cli_lists_restores_and_refuses_a_database_row(pair: tuple[Machine, Machine]) -> None:
    laptop, desk = pair
    session = tool_session(laptop.workspace, 2, seed=30)
    uploaded(laptop, session)

    listed = _cli(desk, "remote", "list", "--machine", "laptop")
    assert listed.returncode == 0, listed.stderr
    assert session["id"] in listed.stdout and "laptop" in listed.stdout
    as_json = json.loads(_cli(desk, "remote", "list", "--json").stdout)
    assert [h["id"] for h in as_json["sessions"]] == [session["id"]]

    target = os.path.join(desk.home, "cli-target")
    os.makedirs(target)
    dry = _cli(desk, "restore", session["id"], "--workspace", target, "--dry-run")
    assert dry.returncode == 0 and "would restore" in dry.stdout, dry.stderr
    assert os.listdir(target) == []
    done = _cli(desk, "restore", session["id"], "--workspace", target)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == session["id"]
    assert lines[-1] == f"resume it: codetether tui --session {session['id']}"
    missing = _cli(desk, "restore", "no-such-id", "--workspace", target)
    assert missing.returncode == 1 and "no session" in missing.stderr

    # The agent's database in the target folder already holds that id: refused, untouched.
    other = os.path.join(desk.home, "db-target")
    folder = os.path.join(other, ".codetether-agent", "sessions")
    os.makedirs(folder)
    db = sqlite3.connect(os.path.join(folder, "sessions.sqlite3"))
    db.execute(
        "CREATE TABLE sessions (id TEXT PRIMARY KEY, revision INTEGER NOT NULL, "
        "header TEXT NOT NULL, message_count INTEGER NOT NULL, tool_count INTEGER NOT NULL)"
    )
    db.execute("INSERT INTO sessions VALUES (?, 1, '{}', 0, 0)", (session["id"],))
    db.commit()
    db.close()
    refused = _cli(desk, "restore", session["id"], "--workspace", other)
    assert refused.returncode == 2 and "database" in refused.stderr, refused.stderr
    assert sorted(os.listdir(folder)) == ["sessions.sqlite3"]


def test_without_the_sink_the_remote_ops_say_so(daemons: DaemonFactory, base: str) -> None:
    daemon = daemons(discover=False).start()
    for call in (lambda c: c.remote_list(), lambda c: c.restore("abc", dry_run=True)):
        with pytest.raises(DaemonError) as off:
            call(daemon.client())
        assert off.value.code == "unavailable" and "sink is off" in off.value.message


def test_a_database_session_is_restored_as_its_export(pair: tuple[Machine, Machine]) -> None:
    laptop, desk = pair
    session = tool_session(laptop.workspace, 4, seed=40)
    store = AgentStore(laptop.sessions_dir)
    store.save(session)
    laptop.daemon.client().sync()
    flush(laptop)
    listed = {h["id"]: h for h in desk.daemon.client().remote_list()["sessions"]}
    assert listed[session["id"]]["message_count"] == len(session["messages"])

    target = os.path.join(desk.home, "from-db")
    os.makedirs(target)
    answer = restore(desk, session["id"], workspace=target)
    assert answer["action"] == "created"
    restored = json.loads(Path(answer["path"]).read_bytes())
    expected = rows_as_sessions(laptop.sessions_dir)[session["id"]]
    expected["metadata"]["directory"] = target
    assert restored == expected
    assert restored["messages"] == session["messages"]
    assert desk.daemon.client().resume(target)["session_id"] == session["id"]


def test_an_outage_in_the_middle_of_a_restore_leaves_nothing(
    daemons: DaemonFactory, base: str, fresh_s3_server: S3Server
) -> None:
    fresh_s3_server.create_bucket("mid")
    laptop = _machine(daemons, base, "laptop", fresh_s3_server, "mid")
    desk = _machine(daemons, base, "desk", fresh_s3_server, "mid")
    desk.daemon = daemons(
        sessions_dirs=[desk.sessions_dir],
        discover=False,
        env={**desk.env, "SESSIOND_TEST_FAULTS": "sink_pause_restore_after_catalog"},
        name="desk",
        env_base=desk.home,
    )
    desk.daemon.allowed_errors |= {"upload_failed"}
    laptop.daemon.allowed_errors |= {"upload_failed"}
    laptop.daemon.start()
    desk.daemon.start()
    session = tool_session(laptop.workspace, 3, seed=6)
    uploaded(laptop, session)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["answer"] = restore(desk, session["id"], workspace=desk.workspace)
        except DaemonError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    wait_for(lambda: desk.daemon.events_named("test_fault"), 60, "restore paused")
    fresh_s3_server.stop()  # the catalog is read; the objects are not
    Path(desk.daemon.state_dir, "sink-pause.release").touch()
    worker.join(120)
    error = outcome.get("error")
    assert isinstance(error, DaemonError) and error.code == "unavailable", outcome
    assert "reach" in error.message
    assert not os.path.exists(os.path.join(desk.sessions_dir, session["id"] + ".json"))
    assert leftovers(desk.sessions_dir) == []
    fresh_s3_server.start()
