"""What a scan or rescan did to the index, and the summary a rescan reports to its listeners,
the `rescan` log event and `watch` clients (docs/logging.md, "rescan"; docs/protocol.md,
"The `watch` stream")."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


@dataclass
class Counts:
    """What a scan or rescan did to the index."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    invalid: int = 0
    deferred: int = 0  # reads to retry: the daemon was out of descriptors or memory

    def as_dict(self) -> dict[str, int]:
        """The counts `rescan` answers (docs/protocol.md); deferred reads are logged instead."""
        return {k: v for k, v in self.__dict__.items() if k != "deferred"}


class RescanReason(Enum):
    REQUEST = "request"  # the `rescan` op
    PERIODIC = "periodic"  # the reconcile timer
    OVERFLOW = "overflow"  # folders whose events the kernel dropped


@dataclass(frozen=True)
class RescanSummary:
    reason: RescanReason
    counts: Counts
    folders: int | None = None  # an overflow rescan: how many folders it covered
    duration_ms: float | None = None  # a rescan of every folder: how long it took

    def fields(self) -> dict[str, Any]:
        """The fields of the `rescan` log and wire event, in their order."""
        out: dict[str, Any] = {"reason": self.reason.value}
        if self.folders is not None:
            out["folders"] = self.folders
        if self.duration_ms is not None:
            out["duration_ms"] = self.duration_ms
        return {**out, **self.counts.as_dict()}
