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

from sessiond.config import DEFAULTS, Settings
from sessiond.logs import log_event

FD_RESERVE = 128
"""Descriptors kept for everything but connections: session files being read, `sync` cookies,
inotify, the log, S3 connections, the decoding workers' pipes."""


@dataclass(frozen=True)
class Limits:
    """Per-connection limits (config keys of the same names; defaults in sessiond/config.py).

    A connection with no request for `idle_timeout_s` is closed; a request line must be
    complete within `partial_line_timeout_s` of its first byte (slow-loris)."""

    max_connections: int = DEFAULTS.max_connections
    idle_timeout_s: float = DEFAULTS.idle_timeout_s
    partial_line_timeout_s: float = DEFAULTS.partial_line_timeout_s

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
