"""A restart: the persisted header cache is used, and what changed while the daemon was down
(edits, deletions, a brand-new workspace in the registry) is in its answers."""

from __future__ import annotations

import os
import signal

import pytest
from sessionctl import DaemonError

from tests.support.agent_sim import AgentSim, make_workspace, new_session
from tests.support.daemon import STOP_TIMEOUT_S, DaemonFactory, wait_for
from tests.support.search_corpus import wait_built


def test_changes_made_while_down_are_served_after_a_restart(
    daemons: DaemonFactory, base: str
) -> None:
    sim = AgentSim(os.path.join(base, "xdg-data", "codetether-agent"))
    folders = {}
    sessions = {}
    for name in ("one", "two", "three"):
        workspace, folders[name] = make_workspace(base, name)
        sessions[name] = new_session(workspace, title=name)
        sim.save(folders[name], sessions[name])

    first = daemons(name="restarted").start()
    assert first.client().resume(os.path.join(base, "one"))["session_id"] == sessions["one"]["id"]
    assert first.stop() == 0
    assert os.path.exists(os.path.join(first.state_dir, "headers.msgpack"))

    sessions["one"]["title"] = "edited while down"
    sim.save(folders["one"], sessions["one"])
    os.unlink(os.path.join(folders["two"], f"{sessions['two']['id']}.json"))
    fresh_ws, fresh_folder = make_workspace(base, "brand-new")
    fresh = new_session(fresh_ws)
    sim.save(fresh_folder, fresh)

    second = daemons(name="restarted").start()
    client = second.client()
    # get, not resume: only the registry (read after ready, awaited by sync) names the folder
    assert client.get(fresh["id"], sync=True)["path"].startswith(os.path.realpath(fresh_folder))
    assert client.resume(os.path.join(base, "one"))["header"]["title"] == "edited while down"
    with pytest.raises(DaemonError) as gone:
        client.resume(os.path.join(base, "two"))
    assert gone.value.code == "not_found"


def test_without_discovery_cached_folders_are_not_served(daemons: DaemonFactory, base: str) -> None:
    sim = AgentSim(os.path.join(base, "xdg-data", "codetether-agent"))
    workspace, folder = make_workspace(base, "ws")
    session = new_session(workspace)
    sim.save(folder, session)
    first = daemons(name="same").start()
    first.client().sync()
    assert first.client().resume(workspace)["session_id"] == session["id"]
    assert first.stop() == 0
    second = daemons(name="same", discover=False).start()
    assert second.client().status()["sessions"] == 0


def test_sighup_rereads_the_config_and_serves_new_folders(
    daemons: DaemonFactory, base: str
) -> None:
    sim = AgentSim(os.path.join(base, "global"), write_pointer=False)
    first_ws, first_folder = make_workspace(base, "first")
    second_ws, second_folder = make_workspace(base, "second")
    sim.save(first_folder, new_session(first_ws))
    later = new_session(second_ws)
    sim.save(second_folder, later)
    config = os.path.join(base, "sessiond.toml")
    with open(config, "w") as fh:
        fh.write(f"sessions_dirs = [{first_folder!r}]\ndiscover = false\n")
    daemon = daemons(extra_args=["--config", config]).start()
    client = daemon.client()
    with pytest.raises(DaemonError):
        client.get(later["id"])
    with open(config, "w") as fh:
        fh.write(f"sessions_dirs = [{first_folder!r}, {second_folder!r}]\ndiscover = false\n")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    # The reload is queued before the rescan it triggers; wait for that rescan's log line.
    wait_for(lambda: daemon.events_named("rescan"), 10, "the reload's rescan")
    assert client.get(later["id"], sync=True)["session_id"] == later["id"]


def test_ctrl_c_stops_the_daemon_and_its_worker_processes_without_a_traceback(
    daemons: DaemonFactory, base: str
) -> None:
    sim = AgentSim(os.path.join(base, "xdg-data", "codetether-agent"))
    workspace, folder = make_workspace(base, "ws")
    sim.save(folder, new_session(workspace))
    daemon = daemons(name="interrupted").start()
    wait_built(daemon)  # the search worker process is running
    assert daemon.proc is not None
    # A Ctrl-C in the terminal of `sessiond run` reaches its whole process group.
    os.killpg(daemon.proc.pid, signal.SIGINT)
    assert daemon.proc.wait(STOP_TIMEOUT_S) == 0
    log = daemon.log_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert [e["code"] for e in daemon.events_named("stop")] == [0]
