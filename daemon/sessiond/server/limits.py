"""Per-connection limits, and the file descriptors they need.

A connection costs a file descriptor. The usual soft RLIMIT_NOFILE (1024) would run out before
the connection cap (1024) is reached, and then every `open` fails: the socket stops accepting
without a word, and the indexer cannot read session files or plant `sync` cookies. So at start
the soft limit is raised to what the cap needs (the hard limit allows it nearly everywhere);
where it cannot be, the cap is lowered to fit, so a client over it gets the clear
"too many connections" error and the daemon keeps descriptors for its own work.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass, replace

from sessiond.config import Settings
from sessiond.logs import log_event

MAX_CONNECTIONS = 1024
IDLE_TIMEOUT_S = 600.0  # a connection with no request for this long is closed
PARTIAL_LINE_TIMEOUT_S = 30.0  # a request line must be complete within this (slow-loris)
FD_RESERVE = 128
"""Descriptors kept for everything but connections: session files being read, `sync` cookies,
inotify, the log, S3 connections, the decoding workers' pipes."""


@dataclass(frozen=True)
class Limits:
    """Per-connection limits (config keys of the same names)."""

    max_connections: int = MAX_CONNECTIONS
    idle_timeout_s: float = IDLE_TIMEOUT_S
    partial_line_timeout_s: float = PARTIAL_LINE_TIMEOUT_S

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            settings.max_connections, settings.idle_timeout_s, settings.partial_line_timeout_s
        )


def fit_descriptors(limits: Limits) -> Limits:
    """Raise the soft RLIMIT_NOFILE to what `limits` needs, or lower the cap to fit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = limits.max_connections + FD_RESERVE
    if soft == resource.RLIM_INFINITY or soft >= want:
        return limits
    raised = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if raised > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft >= want:
        return limits
    cap = max(1, soft - FD_RESERVE)
    log_event(
        "connections_capped",
        logging.WARNING,
        max_connections=cap,
        nofile=soft,
        error=f"the open-files limit ({soft}) leaves room for {cap} connections",
    )
    return replace(limits, max_connections=cap)
