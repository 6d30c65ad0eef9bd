"""`sessionctl` with the daemon stopped: the same answers from its own cold scan, marked
`"source": "scan"`; `--no-fallback` exits 3 (docs/protocol.md §11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.support import reference
from tests.support.compare import assert_answer, assert_listing
from tests.support.corpus import Corpus
from tests.support.daemon import DaemonFactory, DaemonProcess

CLI_TIMEOUT_S = 30


def sessionctl(
    daemon: DaemonProcess, *args: str, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would: its own process, the daemon's environment (so the same
    default socket path and the same agent folders)."""
    return subprocess.run(
        [sys.executable, "-m", "sessionctl", *args],
        env=daemon.env,
        cwd=cwd or daemon.base,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def json_out(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert isinstance(answer, dict)
    return answer


def scan_workspaces(corpus: Corpus) -> list[str]:
    """Workspaces whose sessions the agent's own scan finds: in folders it reads (sources 1, 2
    and 4, not --sessions-dir) and not behind its symlink blind spot."""
    skip = {corpus.extra_workspace, corpus.linked_workspace}
    return [w for w in corpus.all_workspaces() if os.path.realpath(w) not in skip]


def stopped(daemon: DaemonProcess) -> DaemonProcess:
    assert daemon.stop() == 0
    assert not os.path.exists(daemon.socket_path)  # a graceful stop removes its socket
    return daemon


def run_all(daemon: DaemonProcess, commands: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
    """Run the commands (a few at a time: each is a process start) and parse their output."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda command: sessionctl(daemon, *command), commands))
    return [json_out(result) for result in results]


def test_resume_falls_back_to_the_same_answer(corpus: Corpus, corpus_daemon: DaemonProcess) -> None:
    workspaces = scan_workspaces(corpus)
    found = [w for w in workspaces if os.path.realpath(w) in corpus.expected_resume]
    assert len(found) >= 12
    commands = [["resume", "--workspace", w, "--json"] for w in found]
    commands += [["resume", "--workspace", w, "--window", "2", "--json"] for w in found[:4]]
    from_daemon = run_all(corpus_daemon, commands)
    assert {a["source"] for a in from_daemon} == {"daemon"}
    from_scan = run_all(stopped(corpus_daemon), commands)
    for command, daemon_answer, scan_answer in zip(commands, from_daemon, from_scan, strict=True):
        assert scan_answer["source"] == "scan", command
        assert scan_answer["session_id"] == daemon_answer["session_id"], command
        # The whole answer, not only the id: the same header and the same window.
        assert {**scan_answer, "source": "daemon"} == daemon_answer, command


def test_plain_resume_prints_the_id(corpus: Corpus, corpus_daemon: DaemonProcess) -> None:
    workspace = corpus.workspaces["w02"]
    expected = corpus.expected_resume[workspace] + "\n"
    assert sessionctl(corpus_daemon, "resume", "--workspace", workspace).stdout == expected
    # The default workspace is the current directory, for the daemon and for the scan.
    assert sessionctl(corpus_daemon, "resume", cwd=workspace).stdout == expected
    stopped(corpus_daemon)
    assert sessionctl(corpus_daemon, "resume", "--workspace", workspace).stdout == expected
    assert sessionctl(corpus_daemon, "resume", cwd=workspace).stdout == expected


def test_no_fallback_exits_3(corpus: Corpus, corpus_daemon: DaemonProcess) -> None:
    workspace = corpus.workspaces["w02"]
    assert (
        sessionctl(corpus_daemon, "resume", "--workspace", workspace, "--no-fallback").returncode
        == 0
    )
    stopped(corpus_daemon)
    for args in (
        ["resume", "--workspace", workspace, "--no-fallback"],
        ["--no-fallback", "get", corpus.expected_resume[workspace]],
        ["list", "--all", "--no-fallback", "--json"],
        ["status"],  # no fallback exists for the others
        ["sync"],
    ):
        result = sessionctl(corpus_daemon, *args)
        assert result.returncode == 3, (args, result.stdout, result.stderr)
        assert result.stdout == ""
        assert "unreachable" in result.stderr


def test_not_found_exits_1_with_and_without_the_daemon(
    corpus: Corpus, corpus_daemon: DaemonProcess
) -> None:
    nowhere = os.path.join(corpus.base, "ws", "no-such-workspace")
    for daemon_up in (True, False):
        if not daemon_up:
            stopped(corpus_daemon)
        assert sessionctl(corpus_daemon, "resume", "--workspace", nowhere).returncode == 1
        assert sessionctl(corpus_daemon, "get", "no-such-session").returncode == 1


def test_get_falls_back(corpus: Corpus, corpus_daemon: DaemonProcess) -> None:
    ids = [corpus.expected_resume[w] for w in (corpus.workspaces["w01"], corpus.workspaces["w08"])]
    ids += [corpus.ids[0], corpus.linked_id, "sessão-ü-1"]
    commands = [["get", i, "--json"] for i in ids] + [["get", ids[1], "--window", "1", "--json"]]
    from_daemon = run_all(corpus_daemon, commands)
    from_scan = run_all(stopped(corpus_daemon), commands)
    for command, daemon_answer, scan_answer in zip(commands, from_daemon, from_scan, strict=True):
        assert scan_answer["source"] == "scan", command
        assert {**scan_answer, "source": "daemon"} == daemon_answer, command


def test_list_falls_back(corpus: Corpus, corpus_daemon: DaemonProcess) -> None:
    stopped(corpus_daemon)
    registry_only = reference.served_folders(corpus.env)  # what the agent's scan can read
    workspaces = scan_workspaces(corpus)
    answers = run_all(corpus_daemon, [["list", "--workspace", w, "--json"] for w in workspaces])
    for workspace, answer in zip(workspaces, answers, strict=True):
        folders = reference.served_folders(corpus.env, asked=[workspace])
        assert_listing(answer, reference.list_sessions(folders, workspace), source="scan")
    answer = json_out(
        sessionctl(corpus_daemon, "list", "--all", "--limit", "7", "--offset", "3", "--json")
    )
    assert_listing(answer, reference.list_sessions(registry_only, None, 7, 3), source="scan")
    table = sessionctl(corpus_daemon, "list", "--workspace", corpus.workspaces["w02"])
    assert table.returncode == 0
    rows = table.stdout.splitlines()
    assert rows[0].split() == ["ID", "UPDATED", "MESSAGES", "TITLE"]
    expected = reference.list_sessions(registry_only, corpus.workspaces["w02"])["sessions"]
    assert [row.split()[0] for row in rows[1:]] == [h["id"] for h in expected]


def test_fallback_after_a_crash_leaves_a_stale_socket(
    corpus: Corpus, corpus_daemon: DaemonProcess, daemons: DaemonFactory
) -> None:
    # SIGKILL leaves the socket file behind: connecting is refused, the client scans, and a new
    # daemon replaces the stale socket.
    workspace = corpus.workspaces["w04"]
    corpus_daemon.kill()
    assert os.path.exists(corpus_daemon.socket_path)
    answer = json_out(sessionctl(corpus_daemon, "resume", "--workspace", workspace, "--json"))
    assert answer["source"] == "scan"
    assert answer["session_id"] == corpus.expected_resume[workspace]
    assert (
        sessionctl(corpus_daemon, "resume", "--workspace", workspace, "--no-fallback").returncode
        == 3
    )
    restarted = daemons(
        env_base=corpus.base,
        sessions_dirs=[corpus.extra_dir],
        runtime_dir=corpus_daemon.runtime_dir,
    )
    assert restarted.socket_path == corpus_daemon.socket_path
    restarted.start()
    answer = json_out(sessionctl(restarted, "resume", "--workspace", workspace, "--json"))
    assert answer["source"] == "daemon"
    assert answer["session_id"] == corpus.expected_resume[workspace]


@pytest.mark.parametrize("window", [None, 3])
def test_library_answers_match_the_reference_from_the_cli(
    corpus: Corpus, corpus_daemon: DaemonProcess, window: int | None
) -> None:
    # The CLI's --json output is the daemon's response as is.
    folders = reference.served_folders(corpus.env, [corpus.extra_dir])
    workspace = corpus.workspaces["w08"]
    args = ["resume", "--workspace", workspace, "--json"]
    if window is not None:
        args += ["--window", str(window)]
    expected = reference.resume(folders, workspace, window)
    assert expected is not None
    assert_answer(json_out(sessionctl(corpus_daemon, *args)), expected)
