"""What the sink tells the rest of the daemon: the outcome of each upload (for `watch`
clients), its status and a flush's answer. Each turns into the wire's fields only at the edge,
with `fields()` (docs/protocol.md, "status", "flush" and "watch").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from sessionctl.protocol import Event

from sessiond.sink.errors import FailureKind


@dataclass(frozen=True)
class UploadDone:
    """The object now holds the session's newest history."""

    event: ClassVar[Event] = Event.UPLOAD_DONE
    session_id: str
    bytes: int  # the object's size
    duration_ms: int
    attempt: int  # 1 for a first try, then 2, 3, ...

    def fields(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "bytes": self.bytes,
            "duration_ms": self.duration_ms,
            "attempt": self.attempt,
        }


@dataclass(frozen=True)
class UploadFailed:
    """An attempt failed; `error` is scrubbed of credentials."""

    event: ClassVar[Event] = Event.UPLOAD_FAILED
    session_id: str
    kind: FailureKind
    error: str | None
    attempt: int
    retry_in_s: float | None  # None: no retry planned (the next save tries again)

    def fields(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "kind": self.kind.value,
            "error": self.error,
            "attempt": self.attempt,
            "retry_in_s": self.retry_in_s,
        }


UploadReport = UploadDone | UploadFailed


class SinkState(Enum):
    """`state` in the status's `uploads` (docs/protocol.md, "status")."""

    OFF = "off"  # no S3 settings: `SINK_OFF` answers for the missing sink
    RUNNING = "running"
    DEAD = "dead"  # it could not start: it uploads nothing


@dataclass(frozen=True)
class SinkStatus:
    """The status's `uploads`; the field order is the wire's."""

    pending: int
    in_flight: int
    retrying: int
    uploaded: int
    failed: int
    unchanged: int
    bytes_uploaded: int
    delta_uploads: int
    whole_uploads: int
    bytes_sent: int
    delta_fallbacks: int
    replaced: int
    unverified: int
    last_error: str | None
    last_error_at: float | None
    endpoint: str
    bucket: str
    prefix: str
    remote: dict[str, Any] | None  # remote/parts.py's status, when the parts are kept
    state: SinkState = SinkState.RUNNING

    def fields(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "pending": self.pending,
            "in_flight": self.in_flight,
            "retrying": self.retrying,
            "uploaded": self.uploaded,
            "failed": self.failed,
            "unchanged": self.unchanged,
            "bytes_uploaded": self.bytes_uploaded,
            "delta_uploads": self.delta_uploads,
            "whole_uploads": self.whole_uploads,
            "bytes_sent": self.bytes_sent,
            "delta_fallbacks": self.delta_fallbacks,
            "replaced": self.replaced,
            "unverified": self.unverified,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "endpoint": self.endpoint,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "remote": self.remote,
            "state": self.state.value,
        }


@dataclass(frozen=True)
class FlushResult:
    """A flush's answer: the changes before it uploaded, failed or still pending."""

    uploaded: int
    failed: int
    pending: int
    catalog_written: bool | None = None  # None: no catalog is kept (docs/remote.md)

    @property
    def timed_out(self) -> bool:
        return self.pending > 0

    def fields(self) -> dict[str, Any]:
        catalog = {} if self.catalog_written is None else {"catalog_written": self.catalog_written}
        return {
            **catalog,
            "uploaded": self.uploaded,
            "failed": self.failed,
            "pending": self.pending,
            "timed_out": self.timed_out,
        }


SINK_OFF: dict[str, Any] = {
    "enabled": False,
    "state": SinkState.OFF.value,
    "pending": 0,
    "in_flight": 0,
    "uploaded": 0,
    "failed": 0,
    "last_error": None,
}
"""The `uploads` member of `status` when no S3 settings are given (docs/protocol.md §5.5)."""

NOTHING_TO_FLUSH = FlushResult(uploaded=0, failed=0, pending=0)
"""A flush without a sink: nothing was pending, so nothing is."""
