"""`sessionctl search` as a user runs it (docs/search.md): a readable list with
how to resume, the whole response with --json, the current workspace by default, and a clear
exit 3 without a daemon (no cold scan)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.daemon import DaemonFactory, DaemonProcess
from tests.support.search_corpus import WORDS, SearchCorpus, build, wait_built

CLI_TIMEOUT_S = 30


def sessionctl(daemon: DaemonProcess, *args: str, cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sessionctl", *args],
        env=daemon.env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> SearchCorpus:
    return build(os.path.realpath(tmp_path_factory.mktemp("cli")), sessions=12)


def test_search_prints_hits_and_how_to_resume(corpus: SearchCorpus, daemons: DaemonFactory) -> None:
    daemon = daemons(env_base=corpus.base).start()
    wait_built(daemon)
    alpha = corpus.workspaces["alpha"]
    everywhere = corpus.reference("quend*")
    in_alpha = json.loads(
        sessionctl(daemon, "search", "quend*", "--json", "--limit", "1000", cwd=alpha).stdout
    )
    ids_in_alpha = {h["session_id"] for h in in_alpha["hits"]}
    assert in_alpha["total"] < len(everywhere)  # the default scope is the current workspace
    assert {(h["session_id"], h["message_index"]) for h in in_alpha["hits"]} == {
        hit for hit in everywhere if hit[0] in ids_in_alpha
    }
    whole = sessionctl(daemon, "search", "quend*", "--all", "--json", "--limit", "1000", cwd=alpha)
    assert json.loads(whole.stdout)["total"] == len(everywhere)

    shown = sessionctl(daemon, "search", WORDS[0], "--all", "--limit", "3", cwd=alpha)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 3 * 2 + 1
    first_id = lines[0].split()[0]
    assert first_id in corpus.paths
    assert lines[0].endswith(f"({corpus.load(first_id)['metadata']['directory']})")
    assert f"[{WORDS[0]}]" in lines[1].lower()
    assert "codetether tui --session" in lines[-1]

    bad = sessionctl(daemon, "search", '"unclosed', "--all", cwd=alpha)
    assert bad.returncode == 2 and "unbalanced quote" in bad.stderr

    none = sessionctl(daemon, "search", "nosuchwordanywhere", "--all", cwd=alpha)
    assert none.returncode == 0 and "no matching messages" in none.stdout


def test_search_without_a_daemon_exits_3(corpus: SearchCorpus, daemons: DaemonFactory) -> None:
    daemon = daemons(env_base=corpus.base)  # never started
    result = sessionctl(daemon, "search", WORDS[0], "--all", cwd=corpus.base)
    assert result.returncode == 3
    assert "unreachable" in result.stderr and "no scan fallback" in result.stderr
    assert result.stdout == ""
