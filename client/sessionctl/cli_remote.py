"""`sessionctl remote list` and `sessionctl restore`: sessions of every machine in the bucket
(docs/remote.md). The daemon does the S3 work; this module only asks it and prints. Imported
by cli.py only when one of these commands runs.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from sessionctl.client import Client

EXIT_OK = 0


def add_commands(commands: Any, after: argparse.ArgumentParser) -> None:
    """The two subcommands, on cli.py's subparsers."""
    remote = commands.add_parser("remote", parents=[after], help="sessions in the bucket")
    actions = remote.add_subparsers(dest="remote_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[after], help="every machine's sessions")
    scope = listing.add_mutually_exclusive_group()
    scope.add_argument("--workspace", metavar="DIR", help="only sessions of this workspace")
    scope.add_argument("--all", action="store_true", help="every session (the default)")
    listing.add_argument("--machine", metavar="M", help="only sessions of this machine")
    listing.add_argument("--limit", metavar="N", type=int, default=100)
    listing.add_argument("--offset", metavar="N", type=int, default=0)

    restore = commands.add_parser("restore", parents=[after], help="restore a session here")
    restore.add_argument("id", metavar="ID")
    restore.add_argument("--machine", metavar="M", help="the copy of this machine")
    restore.add_argument("--workspace", metavar="DIR", help="default: the session's own")
    restore.add_argument("--dry-run", action="store_true", help="say what would be done")


def cmd_remote(args: argparse.Namespace, client: Client) -> int:
    workspace = os.path.abspath(args.workspace) if args.workspace else None
    response = client.remote_list(
        workspace=workspace, machine=args.machine, limit=args.limit, offset=args.offset
    )
    if args.json:
        print(json.dumps(response, ensure_ascii=False))
        return EXIT_OK
    for line in remote_table(response["sessions"]):
        print(line)
    for shared in response.get("shared_names", []):
        print(f"warning: {len(shared['instances'])} machines are named {shared['machine']}")
    for bad in response.get("unreadable", []):
        print(f"warning: the catalog of {bad['machine']} is unreadable: {bad['error']}")
    return EXIT_OK


def remote_table(headers: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = [("ID", "MACHINE", "UPDATED", "MESSAGES", "DIRECTORY", "TITLE")]
    rows += [
        (
            str(h["id"]),
            str(h.get("machine", "")),
            str(h["updated_at"]),
            str(h["message_count"]),
            str(h.get("directory") or ""),
            " ".join(str(h.get("title") or "").split()),
        )
        for h in headers
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return [
        "  ".join(f"{cell:<{widths[i]}}" for i, cell in enumerate(row[:5])) + "  " + row[5]
        for row in rows
    ]


def cmd_restore(args: argparse.Namespace, client: Client) -> int:
    workspace = os.path.abspath(args.workspace) if args.workspace else None
    response = client.restore(
        args.id, machine=args.machine, workspace=workspace, dry_run=args.dry_run
    )
    if args.json:
        print(json.dumps(response, ensure_ascii=False))
        return EXIT_OK
    action, path = response["action"], response["path"]
    if args.dry_run:
        print(f"would restore {response['session_id']} from {response['machine']}: {action} {path}")
        return EXIT_OK
    print(response["session_id"])
    print(f"{action}: {path} (from {response['machine']})")
    print(f"resume it: codetether tui --session {response['session_id']}")
    return EXIT_OK
