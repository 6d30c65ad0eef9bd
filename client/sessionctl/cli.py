"""`sessionctl`: the command line of sessiond (README, "The client: exit codes, trust, start-up").

Exit codes: 0 done, 1 no such session, 2 usage or other error, 3 the daemon is unreachable (or
its socket is refused as untrusted). `resume`, `get` and `list` fall back to the agent's own
scan when the daemon does not answer.

A shell prompt pays for this whole process on every call, so the common forms of the hot
commands are read by `sessionctl.quickargs` and argparse is imported only for anything else
(help, usage errors, the other commands); the fallback scan is imported only when it runs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping

from sessionctl.client import Client, DaemonError, DaemonUnreachable, DaemonUntrusted
from sessionctl.protocol import ErrorCode
from sessionctl.quickargs import count_value, quick_parse, seconds_value

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and argparse cost more than a round trip with the daemon
    import argparse
    from collections.abc import Callable, Sequence
    from types import SimpleNamespace
    from typing import Any

    Args = argparse.Namespace | SimpleNamespace
    Handler = Callable[[Args, Client], int]
    Answer = Callable[[], dict[str, Any]]

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_ERROR = 2
EXIT_UNREACHABLE = 3

DEFAULT_CONNECT_TIMEOUT_S = 0.1
DEFAULT_REPLY_TIMEOUT_S = 30.0


# --- argument parsing ------------------------------------------------------------------------


def _seconds(text: str) -> float:
    import argparse

    try:
        return seconds_value(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    import argparse

    try:
        return count_value(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    """The options accepted before and after the subcommand. After it, absent ones are
    SUPPRESSed so they do not overwrite what was given before it."""
    import argparse

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", metavar="PATH", default=default(None), help="daemon socket")
    common.add_argument(
        "--timeout",
        metavar="S",
        type=_seconds,
        default=default(None),
        help="seconds to connect and to wait for a reply (sync/flush: also the wait itself)",
    )
    common.add_argument(
        "--no-fallback",
        action="store_true",
        default=default(False),
        help="do not scan the sessions folders when the daemon is unreachable",
    )
    common.add_argument(
        "--json", action="store_true", default=default(False), help="print the whole response"
    )
    return common


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv` (default: this process's command line)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="sessionctl",
        description="Ask sessiond about codetether sessions.",
        parents=[_common_options(suppress=False)],
    )
    after = _common_options(suppress=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    resume = commands.add_parser("resume", parents=[after], help="the session to resume")
    resume.add_argument("--workspace", metavar="DIR", help="default: the current directory")
    _add_read_options(resume)

    get = commands.add_parser("get", parents=[after], help="one session by id")
    get.add_argument("id", metavar="ID")
    _add_read_options(get)

    listing = commands.add_parser("list", parents=[after], help="sessions, newest first")
    scope = listing.add_mutually_exclusive_group()
    scope.add_argument("--workspace", metavar="DIR", help="default: the current directory")
    scope.add_argument("--all", action="store_true", help="every session")
    listing.add_argument("--limit", metavar="N", type=_count, default=100)
    listing.add_argument("--offset", metavar="N", type=_count, default=0)
    listing.add_argument("--sync", action="store_true", help="see every save made before")

    from sessionctl import cli_search  # argparse is loaded by now; the module is small

    cli_search.add_parser(commands, [after], _count)

    for name, text in (
        ("status", "what the daemon is doing"),
        ("sync", "wait until the index holds every change made so far"),
        ("flush", "wait until every change seen so far is uploaded"),
        ("rescan", "reconcile every sessions folder now"),
        ("watch", "print events as JSON lines until interrupted"),
    ):
        commands.add_parser(name, parents=[after], help=text)
    _add_remote_commands(commands, after, sys.argv[1:] if argv is None else argv)
    return parser


def _add_remote_commands(
    commands: Any, after: argparse.ArgumentParser, argv: Sequence[str]
) -> None:
    """`remote list` and `restore` (cli_remote.py), whose module is imported only when one of
    them (or help) is on the command line."""
    if not {"remote", "restore", "-h", "--help"} & set(argv):
        commands.add_parser("remote", help="sessions in the bucket (remote list)")
        commands.add_parser("restore", help="restore a session from the bucket")
        return
    from sessionctl import cli_remote

    cli_remote.add_commands(commands, after)


def _search_handler(args: Args, client: Client) -> int:
    from sessionctl import cli_search  # imported only when `search` runs

    return cli_search.cmd_search(args, client)


def _remote_handler(name: str) -> Handler:
    def run(args: Args, client: Client) -> int:
        from sessionctl import cli_remote

        return int(getattr(cli_remote, name)(args, client))

    return run


def _add_read_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--window", metavar="N", type=_count, help="keep the last N messages")
    parser.add_argument("--sync", action="store_true", help="see every save made before")


# --- output ----------------------------------------------------------------------------------


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False))


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def readable_lines(obj: Mapping[str, Any], indent: int = 0) -> list[str]:
    """`key: value` lines, nested objects indented under their key."""
    pad = " " * indent
    lines: list[str] = []
    for key, value in obj.items():
        if isinstance(value, Mapping) and value:
            lines.append(f"{pad}{key}:")
            lines.extend(readable_lines(value, indent + 2))
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return lines


def _print_readable(response: Mapping[str, Any]) -> None:
    shown = {k: v for k, v in response.items() if k not in ("ok", "req")}
    for line in readable_lines(shown):
        print(line)


def _one_line(text: Any) -> str:
    return " ".join(str(text).split()) if text is not None else ""


def table_lines(headers: Sequence[Mapping[str, Any]]) -> list[str]:
    """The `list` table: id, updated_at, messages, title."""
    rows = [("ID", "UPDATED", "MESSAGES", "TITLE")]
    rows += [
        (str(h["id"]), str(h["updated_at"]), str(h["message_count"]), _one_line(h.get("title")))
        for h in headers
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return [
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip()
        for r in rows
    ]


# --- commands --------------------------------------------------------------------------------


def _workspace(value: str | None) -> str:
    return os.path.abspath(value) if value is not None else os.getcwd()


class _Failed(Exception):
    """The command failed with this message and exit code (raised by the fallback scan)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _scan() -> Any:
    """The fallback scan module, imported only when the daemon cannot answer."""
    from sessionctl import scan

    return scan


def _with_fallback(
    args: Args, ask: Answer, fall: Callable[[Any], dict[str, Any]]
) -> dict[str, Any]:
    """The daemon's answer, or the scan's when the daemon is unreachable and fallback is on.
    `fall` gets the scan module."""
    try:
        return ask()
    except DaemonUntrusted as exc:
        if args.no_fallback:
            raise
        print(f"sessionctl: {exc}; reading the sessions folders instead", file=sys.stderr)
    except DaemonUnreachable:
        if args.no_fallback:
            raise
    scan = _scan()
    try:
        return fall(scan)
    except scan.NotFound as exc:
        raise _Failed(str(exc), EXIT_NOT_FOUND) from exc
    except scan.ScanError as exc:
        raise _Failed(str(exc), EXIT_ERROR) from exc


def cmd_resume(args: Args, client: Client) -> int:
    workspace = _workspace(args.workspace)
    response = _with_fallback(
        args,
        lambda: client.resume(workspace, window=args.window, sync=args.sync),
        lambda scan: scan.scan_resume(workspace, window=args.window),
    )
    if args.json:
        _print_json(response)
    else:
        print(response["session_id"])
    return EXIT_OK


def cmd_get(args: Args, client: Client) -> int:
    response = _with_fallback(
        args,
        lambda: client.get(args.id, window=args.window, sync=args.sync),
        lambda scan: scan.scan_get(args.id, window=args.window, workspace=os.getcwd()),
    )
    if args.json:
        _print_json(response)
    else:
        for line in readable_lines(response["header"]):
            print(line)
    return EXIT_OK


def cmd_list(args: Args, client: Client) -> int:
    workspace = None if args.all else _workspace(args.workspace)
    response = _with_fallback(
        args,
        lambda: client.list(workspace, limit=args.limit, offset=args.offset, sync=args.sync),
        lambda scan: scan.scan_list(workspace, limit=args.limit, offset=args.offset),
    )
    if args.json:
        _print_json(response)
    else:
        for line in table_lines(response["sessions"]):
            print(line)
    return EXIT_OK


def _show(response: dict[str, Any], args: Args) -> int:
    if args.json:
        _print_json(response)
    else:
        _print_readable(response)
    return EXIT_OK


def cmd_watch(args: Args, client: Client) -> int:
    events = client.watch()
    try:
        for event in events:
            print(json.dumps(event, ensure_ascii=False), flush=True)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        events.close()
    return EXIT_OK


HANDLERS: dict[str, Handler] = {
    "resume": cmd_resume,
    "get": cmd_get,
    "list": cmd_list,
    "status": lambda args, client: _show(client.status(), args),
    "sync": lambda args, client: _show(client.sync(timeout=args.timeout), args),
    "flush": lambda args, client: _show(client.flush(timeout=args.timeout), args),
    "rescan": lambda args, client: _show(client.rescan(), args),
    "watch": cmd_watch,
    "search": _search_handler,
    "remote": _remote_handler("cmd_remote"),
    "restore": _remote_handler("cmd_restore"),
}


# --- entry point -----------------------------------------------------------------------------


def _fail(message: str, code: int) -> int:
    print(f"sessionctl: {message}", file=sys.stderr)
    return code


def _client(args: Args) -> Client:
    return Client(
        socket=args.socket,
        timeout=args.timeout if args.timeout is not None else DEFAULT_REPLY_TIMEOUT_S,
        connect_timeout=args.timeout if args.timeout is not None else DEFAULT_CONNECT_TIMEOUT_S,
    )


def _run(args: Args) -> int:
    try:
        with _client(args) as client:
            return HANDLERS[args.command](args, client)
    except BrokenPipeError:
        # The reader went away (`sessionctl list | head`); nothing left to say to it.
        _silence_stdout()
        return EXIT_OK
    except DaemonError as exc:
        code = EXIT_NOT_FOUND if exc.code == ErrorCode.NOT_FOUND else EXIT_ERROR
        return _fail(exc.message or exc.code, code)
    except DaemonUnreachable as exc:
        return _fail(f"the daemon is unreachable: {exc}", EXIT_UNREACHABLE)
    except _Failed as exc:
        return _fail(str(exc), exc.code)
    except OSError as exc:
        return _fail(str(exc), EXIT_ERROR)


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """The command line read as argparse reads it: by the quick reader when it can, else by
    argparse (which raises SystemExit for help and usage errors)."""
    args = quick_parse(sys.argv[1:] if argv is None else argv)
    return args if args is not None else build_parser(argv).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error (or the help)
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
