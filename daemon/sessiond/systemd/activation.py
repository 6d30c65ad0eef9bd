"""Socket activation: the listening sockets systemd passed in (`LISTEN_PID`, `LISTEN_FDS`,
`LISTEN_FDNAMES`, as sd_listen_fds_with_names reads them). docs/systemd.md, "Socket activation".

`parse` is the pure reading of the variables; `take` reads this process's environment and
removes them from it, so that children never think the sockets are theirs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import NamedTuple

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START: the first inherited descriptor
LISTEN_ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
UNNAMED = "unknown"  # the name systemd gives a descriptor when LISTEN_FDNAMES is unset


class ActivationError(Exception):
    """The activation variables are malformed; the message names the variable and its value."""


class ListenFd(NamedTuple):
    fd: int
    name: str  # FileDescriptorName= of the socket unit, or UNNAMED


class Activation(NamedTuple):
    """The descriptors handed over, in order, from LISTEN_FDS_START on (never empty)."""

    fds: tuple[ListenFd, ...]

    @property
    def first(self) -> ListenFd:
        return self.fds[0]


def parse(env: Mapping[str, str], pid: int) -> Activation | None:
    """The sockets `env` hands to process `pid`: None when it hands none (no `LISTEN_FDS`, or
    0) or hands them to another process (`LISTEN_PID`); ActivationError when a value is not
    what systemd would write. A missing `LISTEN_PID` is accepted, as sessiond always has."""
    raw_pid = env.get("LISTEN_PID", "")
    raw_count = env.get("LISTEN_FDS", "")
    if not raw_count:
        return None
    if raw_pid and _number("LISTEN_PID", raw_pid) != pid:
        return None  # meant for another process, our parent say
    count = _number("LISTEN_FDS", raw_count)
    if count == 0:
        return None
    raw_names = env.get("LISTEN_FDNAMES")
    if raw_names is None:
        names = [UNNAMED] * count
    else:
        names = raw_names.split(":")
        if len(names) != count:
            raise ActivationError(
                f"LISTEN_FDNAMES={raw_names!r} names {len(names)} sockets but "
                f"LISTEN_FDS={raw_count!r} passes {count}"
            )
    return Activation(tuple(ListenFd(LISTEN_FDS_START + i, name) for i, name in enumerate(names)))


def take(environ: MutableMapping[str, str] | None = None) -> Activation | None:
    """`parse` of this process's environment, whose activation variables are then removed
    (whatever they held, so no child sees them)."""
    environ = os.environ if environ is None else environ
    try:
        return parse(environ, os.getpid())
    finally:
        for name in LISTEN_ENV:
            environ.pop(name, None)


def _number(name: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise ActivationError(
            f"{name}={value!r} is not a count or pid as systemd writes them; unset LISTEN_PID, "
            "LISTEN_FDS and LISTEN_FDNAMES to have sessiond bind its socket itself"
        )
    return int(value)
