"""Object keys of sessiond's own objects in the bucket (docs/remote.md, "Layout").

Beside the agent's `<prefix><id>/history.jsonl`, each machine keeps a session's other parts
under `<prefix><id>/sessiond/<instance>/`, and its catalog at
`<prefix>.sessiond/catalogs/<machine>/<instance>.json.gz`. A session id never holds a `.`, so no
session's folder can be `.sessiond`. The instance (a random id kept in the state folder) keeps
two machines that were given the same name apart: they never write each other's objects.
"""

from __future__ import annotations

import os
import re
import socket
import uuid

from sessiond.atomicwrite import write_state_file

HEAD = "head.json"  # every top-level field but the arrays, raw, and the key order
PAGES = "pages.jsonl"  # one page a line
TOOL_USES = "tool_uses.jsonl"  # one tool use a line
HISTORY = "history.jsonl"  # the agent's own object: one message a line
INSTANCE_FILE = "machine.instance"
CATALOG_SUFFIX = ".json.gz"  # a catalog is gzipped JSON: it is rewritten often

_MACHINE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_INSTANCE = re.compile(r"^[0-9a-f]{32}$")


def catalogs_prefix(prefix: str) -> str:
    return f"{prefix}.sessiond/catalogs/"


def catalog_key(prefix: str, machine: str, instance: str) -> str:
    return f"{catalogs_prefix(prefix)}{machine}/{instance}{CATALOG_SUFFIX}"


def part_key(prefix: str, session_id: str, instance: str, part: str) -> str:
    return f"{prefix}{session_id}/sessiond/{instance}/{part}"


def history_key(prefix: str, session_id: str) -> str:
    return f"{prefix}{session_id}/{HISTORY}"


def valid_machine_name(name: object) -> bool:
    return isinstance(name, str) and bool(_MACHINE.match(name))


def default_machine_name() -> str:
    """The host name's first label, cut to what a machine name may hold."""
    host = socket.gethostname().split(".")[0]
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", host).strip("-.")[:63]
    return cleaned if valid_machine_name(cleaned) else "localhost"


def machine_instance(state_dir: str) -> str:
    """This machine's instance id, made once and kept in the state folder."""
    path = os.path.join(state_dir, INSTANCE_FILE)
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read().strip()
        if _INSTANCE.match(text):
            return text
    except (OSError, UnicodeDecodeError):
        pass
    instance = uuid.uuid4().hex
    write_state_file(path, instance.encode("ascii") + b"\n")
    return instance
