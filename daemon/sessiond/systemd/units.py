"""`sessiond install-service`: the systemd user units, written for the sessiond that runs this.

The unit texts live here, so an installed sessiond (pipx, pip --user) can write them without
the source tree; `packaging/systemd/` holds the same texts rendered for `%h/.local/bin/sessiond`
(what pipx and pip --user install), and a test keeps the two equal. docs/systemd.md explains
every line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

PACKAGED_EXEC = "%h/.local/bin/sessiond"  # ExecStart= in packaging/systemd/
SERVICE_NAME = "sessiond.service"
SOCKET_NAME = "sessiond.socket"
ENABLE_COMMAND = (
    f"systemctl --user daemon-reload && systemctl --user enable --now {SOCKET_NAME} {SERVICE_NAME}"
)

SERVICE = """\
# sessiond as a systemd user service: `sessiond install-service` writes this file with
# ExecStart= pointing at the sessiond it ran as. See docs/systemd.md.
[Unit]
Description=sessiond: codetether session index and history uploads
Requires=sessiond.socket
After=sessiond.socket

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start} run
ExecReload=kill -HUP $MAINPID
# CODETETHER_HISTORY_S3_* for the history sink, one VAR=value a line; keep it mode 0600.
EnvironmentFile=-%E/sessiond/env
# sessiond pings every WatchdogSec/2 while its indexer and file watcher are alive; a dead
# watcher means no pings, and systemd restarts it rather than serve a stale index.
WatchdogSec=30s
Restart=on-failure
RestartSec=2s
TimeoutStartSec=5min
TimeoutStopSec=60s
# Hardening that works in a user unit: none of it needs privileges or namespaces.
UMask=0077
NoNewPrivileges=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM

[Install]
WantedBy=default.target
"""

SOCKET = """\
# The socket of sessiond.service: systemd listens from login on, so a client that connects
# before (or while) sessiond starts is queued and answered. See docs/systemd.md.
[Unit]
Description=sessiond socket: codetether session queries

[Socket]
ListenStream=%t/sessiond/sessiond.sock
SocketMode=0600
DirectoryMode=0700
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
"""


def unit_quote(arg: str) -> str:
    """`arg` as one word of a unit file's command line: `%` and `$` doubled, quoted when it
    holds a space, a quote or a backslash."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if arg and not any(c.isspace() or c in "\"'\\;" for c in arg):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_units(exec_start: str) -> dict[str, str]:
    """Both unit files, by name; `exec_start` is already in unit-file syntax."""
    return {SERVICE_NAME: SERVICE.format(exec_start=exec_start), SOCKET_NAME: SOCKET}


def running_sessiond() -> str:
    """The command that runs this sessiond, as a unit-file command line (absolute paths)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "sessiond" and os.sep in argv0:
        return unit_quote(os.path.abspath(argv0))  # the console script we were started as
    beside = os.path.join(os.path.dirname(sys.executable), "sessiond")
    if os.access(beside, os.X_OK):
        return unit_quote(beside)  # the console script of the environment running us
    return f"{unit_quote(sys.executable)} -m sessiond"


def default_unit_dir(env: Mapping[str, str]) -> str:
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME", "/"), ".config")
    return os.path.join(base, "systemd", "user")


def install_units(unit_dir: str, exec_start: str) -> list[str]:
    """Write both units into `unit_dir` (atomically, mode 0644); return their paths."""
    os.makedirs(unit_dir, exist_ok=True)
    written = []
    for name, text in render_units(exec_start).items():
        path = os.path.join(unit_dir, name)
        tmp = f"{path}.sessiond-tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        written.append(path)
    return written


def install_service(env: Mapping[str, str], unit_dir: str | None = None) -> int:
    unit_dir = os.path.abspath(unit_dir or default_unit_dir(env))
    exec_start = running_sessiond()
    for path in install_units(unit_dir, exec_start):
        print(f"sessiond: wrote {path}", file=sys.stderr)
    print(f"sessiond: ExecStart={exec_start} run", file=sys.stderr)
    print("sessiond: to enable and start it now, run:", file=sys.stderr)
    print(ENABLE_COMMAND)
    return 0
