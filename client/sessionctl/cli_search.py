"""`sessionctl search`: full-text search through the daemon's index (docs/search.md).

There is no fallback: the index lives in the daemon, and a cold scan of every transcript is
what the index exists to avoid. A daemon that does not answer gets a clear message, exit 3.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from sessionctl.client import Client, DaemonUnreachable

RESUME_COMMAND = "codetether tui --session {id}"
"""How the agent resumes a session by id (docs/agent-files.md, "Resuming")."""


def add_parser(
    commands: Any, parents: Sequence[argparse.ArgumentParser], count: Callable[[str], int]
) -> None:
    search = commands.add_parser(
        "search", parents=list(parents), help="full-text search of every session's messages"
    )
    search.add_argument("query", metavar="QUERY", help='words, "a phrase", prefix*')
    scope = search.add_mutually_exclusive_group()
    scope.add_argument("--workspace", metavar="DIR", help="default: the current directory")
    scope.add_argument("--all", action="store_true", help="every session")
    search.add_argument("--limit", metavar="N", type=count, default=20)
    search.add_argument("--offset", metavar="N", type=count, default=0)
    search.add_argument("--sync", action="store_true", help="see every save made before")


def _one_line(text: Any) -> str:
    return " ".join(str(text).split()) if text is not None else ""


def hit_lines(response: Mapping[str, Any]) -> list[str]:
    """Each hit: id, when, title, workspace; then where it matched and the snippet; then how
    to resume."""
    lines: list[str] = []
    for hit in response["hits"]:
        where = (
            "title" if hit["message_index"] is None else f"#{hit['message_index']} {hit['role']}"
        )
        title = _one_line(hit["title"]) or "(no title)"
        place = f"  ({hit['directory']})" if hit.get("directory") else ""
        lines.append(f"{hit['session_id']}  {hit['updated_at']}  {title}{place}")
        lines.append(f"    {where}: {_one_line(hit['snippet'])}")
    shown = len(response["hits"])
    if not shown:
        lines.append("no matching messages")
    else:
        first = response["hits"][0]["session_id"]
        lines.append(
            f"{shown} of {response['total']} matching messages; resume one with: "
            + RESUME_COMMAND.format(id=first if shown == 1 else "<id>")
        )
    if response.get("pending"):
        lines.append(f"(the index is still being built: {response['pending']} sessions to go)")
    return lines


def cmd_search(args: argparse.Namespace | SimpleNamespace, client: Client) -> int:
    workspace = None if args.all else os.path.abspath(args.workspace or os.getcwd())
    try:
        response = client.search(
            args.query, workspace=workspace, limit=args.limit, offset=args.offset, sync=args.sync
        )
    except DaemonUnreachable as exc:
        raise DaemonUnreachable(
            f"{exc}; search needs the running daemon (its index), there is no scan fallback: "
            "start it with `sessiond start` or `systemctl --user start sessiond`"
        ) from None
    if args.json:
        print(json.dumps(response, ensure_ascii=False))
    else:
        for line in hit_lines(response):
            print(line)
    return 0
