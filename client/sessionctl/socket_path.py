"""Where the daemon's socket lives when nobody says (interface §4)."""

from __future__ import annotations

import os
from collections.abc import Mapping


def default_socket_path(env: Mapping[str, str] | None = None) -> str:
    """`$SESSIOND_SOCKET`, else `$XDG_RUNTIME_DIR/sessiond/sessiond.sock`, else
    `/tmp/sessiond-<uid>/sessiond.sock`."""
    env = os.environ if env is None else env
    explicit = env.get("SESSIOND_SOCKET")
    if explicit:
        return explicit
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "sessiond", "sessiond.sock")
    return os.path.join("/tmp", f"sessiond-{os.getuid()}", "sessiond.sock")
