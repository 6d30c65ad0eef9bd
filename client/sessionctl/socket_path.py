"""Where the daemon's socket lives when nobody says, and which socket folders can be trusted
(docs/protocol.md §1.1, §1.3)."""

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


IMPERSONATION_HINT = "another user may be impersonating sessiond"


def folder_problem(st: os.stat_result, uid: int) -> str | None:
    """Why a socket folder with this stat cannot be trusted by `uid`, or None when it can: it
    must be theirs and not writable by others, or another user could have put a listener in
    it (when XDG_RUNTIME_DIR is unset, anyone can create /tmp/sessiond-<uid>/ first). The
    client refuses to talk through such a folder and the daemon to listen in it."""
    if st.st_uid != uid:
        return f"belongs to uid {st.st_uid}, not to you (uid {uid})"
    if st.st_mode & 0o022:
        return f"is writable by others (mode {st.st_mode & 0o7777:o})"
    return None
