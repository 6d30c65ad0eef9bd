"""The CLI's hot path stays light: `sessionctl resume`/`status` import neither the fallback scan
nor what the start-up profile showed they do not need (argparse, dataclasses, typing, socket's
enums, ...), and the quick command-line reader agrees with argparse wherever it answers.

Each process runs with `python -S` and the client's folder put on sys.path by hand, so that
nothing `site` imports (an editable install's finder imports pathlib and re) hides a module
the client pulls in itself.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from typing import Any

import pytest
import sessionctl
from hypothesis import given, settings
from hypothesis import strategies as st
from sessionctl.cli import build_parser
from sessionctl.quickargs import COMMANDS, COMMON, quick_parse

from tests.support.daemon import DaemonProcess
from tests.support.robust import Agent

CLIENT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(sessionctl.__file__)))

NOT_ON_THE_HOT_PATH = frozenset(
    {
        "sessionctl.scan",  # the fallback
        "sessionctl.store",  # the fallback's reader of the agent's databases
        "sessionctl.store_scan",
        "sqlite3",
        "sessionctl.document",
        "sessionctl.agent",  # datetime, re-based rules: the daemon's and the scan's
        "argparse",  # help and usage errors only
        "gettext",
        "dataclasses",
        "inspect",
        "typing",
        "socket",  # its enums; the client uses _socket
        "selectors",
        "concurrent.futures",
        "mmap",
        "pathlib",
        "datetime",
        "threading",  # the client's one lock comes from _thread
        "math",  # only for --timeout
    }
)

PROGRAM = """
import sys
sys.path.insert(0, {client_dir!r})
from sessionctl.cli import main
code = main({argv!r})
sys.stdout.flush()
print("MODULES", " ".join(sorted(sys.modules)))
sys.exit(code)
"""


def run_cli(argv: list[str], env: dict[str, str], cwd: str) -> tuple[int, str, set[str]]:
    """Exit code, output (without the module list) and the modules imported by the end."""
    program = PROGRAM.format(client_dir=CLIENT_DIR, argv=argv)
    done = subprocess.run(
        [sys.executable, "-S", "-c", program],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out, _, modules = done.stdout.rpartition("MODULES ")
    assert modules, done.stderr
    return done.returncode, out + done.stderr, set(modules.split())


def test_hot_commands_against_the_daemon_import_only_the_round_trip(
    agent: Agent, daemon: DaemonProcess
) -> None:
    workspace = agent.workspaces[0]
    with daemon.client() as client:
        expected = client.resume(workspace, sync=True)["session_id"]
    code, out, modules = run_cli(["resume", "--workspace", workspace], daemon.env, agent.base)
    assert (code, out.strip()) == (0, expected)
    assert "sessionctl.client" in modules  # the check can see the client's own modules
    assert not modules & NOT_ON_THE_HOT_PATH
    for argv, shown in (
        (["status", "--json"], '"sessions": 1'),
        (["get", expected], f"id: {expected}"),
        (["list", "--all"], expected),
    ):
        code, out, modules = run_cli(argv, daemon.env, agent.base)
        assert code == 0 and shown in out, out
        assert not modules & NOT_ON_THE_HOT_PATH, argv


def test_daemon_down_without_fallback_imports_no_scan(agent: Agent, daemon: DaemonProcess) -> None:
    assert daemon.stop() == 0
    argv = ["resume", "--workspace", agent.workspaces[0], "--no-fallback"]
    code, out, modules = run_cli(argv, daemon.env, agent.base)
    assert code == 3 and "the daemon is unreachable" in out
    assert not modules & NOT_ON_THE_HOT_PATH
    # The fallback itself does import the scan: the check above could have failed.
    code, out, modules = run_cli(argv[:-1], daemon.env, agent.base)
    assert code == 0 and "sessionctl.scan" in modules


def test_help_and_usage_errors_still_come_from_argparse(base: str) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": base}
    code, out, modules = run_cli(["resume", "--window", "-1"], env, base)
    assert code == 2 and "argument --window: must be 0 or more: '-1'" in out
    assert "argparse" in modules
    code, out, _ = run_cli(["--help"], env, base)
    assert code == 0 and "Ask sessiond about codetether sessions." in out


# --- the quick reader against argparse ----------------------------------------------------

READ_BY_THE_QUICK_READER = [
    ["resume"],
    ["resume", "--workspace", "/w"],
    ["resume", "--workspace=/w", "--window", "5", "--sync", "--json"],
    ["--socket", "/s.sock", "--timeout", "0.5", "resume", "--no-fallback"],
    ["--socket", "/a", "resume", "--socket", "/b"],  # after the command wins
    ["--json", "resume", "--workspace", "rel/dir"],
    ["resume", "--workspace", "/w", "--workspace", "/v"],
    ["get", "abc-123"],
    ["get", "--window", "0", "abc", "--json"],
    ["list"],
    ["list", "--all", "--limit", "3", "--offset", "7"],
    ["list", "--workspace", "/w", "--sync"],
    ["status"],
    ["status", "--json", "--socket=/x"],
    ["sync", "--timeout", "2"],
    ["flush"],
    ["rescan"],
    ["watch"],
]

LEFT_TO_ARGPARSE = [
    [],
    ["-h"],
    ["resume", "--help"],
    ["resume", "--work", "/w"],  # an abbreviation argparse accepts
    ["resume", "--window", "-1"],
    ["resume", "--window", "x"],
    ["resume", "--window"],
    ["resume", "--timeout", "0"],
    ["resume", "--timeout", "nan"],
    ["resume", "extra"],
    ["resume", "--json=yes"],
    ["resume", "--", "--workspace"],
    ["resume", "--workspace", ""],
    ["resume", "--workspace", "-w"],
    ["get"],
    ["get", "a", "b"],
    ["get", "--workspace", "/w", "a"],
    ["list", "--all", "--workspace", "/w"],
    ["status", "--limit", "3"],
    ["bogus"],
    ["search", "text"],  # commands the quick reader does not know are argparse's
]


def argparse_result(argv: list[str]) -> dict[str, Any] | None:
    """argparse's namespace, or None when it rejects the line (or prints help)."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            return vars(build_parser().parse_args(argv))
        except SystemExit:
            return None


@pytest.mark.parametrize("argv", READ_BY_THE_QUICK_READER, ids=" ".join)
def test_the_quick_reader_gives_what_argparse_gives(argv: list[str]) -> None:
    quick = quick_parse(argv)
    assert quick is not None, "a common form must not need argparse"
    assert vars(quick) == argparse_result(argv)


@pytest.mark.parametrize("argv", LEFT_TO_ARGPARSE, ids=" ".join)
def test_the_quick_reader_leaves_the_rest_to_argparse(argv: list[str]) -> None:
    assert quick_parse(argv) is None


COMMANDS_AND_OPTIONS = sorted(
    {*COMMANDS, *COMMON, *(option for own, _ in COMMANDS.values() for option in own), "search"}
)
TOKENS = [
    *COMMANDS_AND_OPTIONS,
    *(f"{option}=" for option in ("--workspace", "--window", "--socket", "--json")),
    "--workspace=/w",
    "--window=3",
    "/w",
    "rel",
    "abc-1",
    "0",
    "5",
    "-1",
    "1.5",
    "nan",
    "",
    "-",
    "--",
    "-h",
    "--wor",
    "--al",
]


@settings(max_examples=int(os.environ.get("SESSIOND_PROPERTY_EXAMPLES", "100")) * 5)
@given(
    st.lists(st.sampled_from(TOKENS), max_size=3),
    st.sampled_from(sorted(COMMANDS)),
    st.lists(st.sampled_from(TOKENS), max_size=5),
)
def test_any_command_line_the_quick_reader_answers_is_read_as_argparse_reads_it(
    before: list[str], command: str, after: list[str]
) -> None:
    argv = [*before, command, *after]
    quick = quick_parse(argv)
    if quick is not None:
        assert vars(quick) == argparse_result(argv)
