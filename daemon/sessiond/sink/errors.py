"""What went wrong with an upload, said so that an operator knows what to fix.

Messages are built from the error code, the HTTP status and the sink's own non-secret settings
only: never from the config object, the request, or the exception's text, which can carry
signed headers. `Scrubber` is a second line of defence over every message that leaves the sink.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from sessiond.logs import redact
from sessiond.sink.config import ENV_PREFIX, SinkConfig


class FailureKind(StrEnum):
    """Kinds of failure, as `kind` in `upload_failed` (docs/logging.md)."""

    CREDENTIALS = "credentials"
    BUCKET = "bucket"
    DENIED = "denied"
    REGION = "region"
    CLOCK = "clock"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    INTEGRITY = "integrity"
    SERVER = "server"
    REQUEST = "request"
    UNREADABLE = "unreadable"
    INTERNAL = "internal"
    ENDPOINT = "endpoint"

    @property
    def setup(self) -> bool:
        """Not fixed by retrying, only by changing the setup (keys, bucket, policy, clock)."""
        return self in _SETUP_KINDS


_SETUP_KINDS = frozenset(
    {
        FailureKind.CREDENTIALS,
        FailureKind.BUCKET,
        FailureKind.DENIED,
        FailureKind.REGION,
        FailureKind.CLOCK,
        FailureKind.ENDPOINT,
    }
)


class UnexpectedAnswer(Exception):
    """The store answered a write with something that does not fit it: the object is checked
    and uploaded again. The text says what was expected and found (sizes and ETags only)."""


@dataclass(frozen=True)
class SinkError:
    kind: FailureKind
    message: str

    @property
    def setup(self) -> bool:
        """True when only a change of the setup (keys, bucket, policy, clock) can fix it."""
        return self.kind.setup


class Scrubber:
    """Replaces the credentials in any text with `***`."""

    def __init__(self, *secrets: str) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _root_cause(exc: BaseException) -> BaseException:
    """The botocore error behind wrappers such as boto3's S3UploadFailedError."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, (ClientError, BotoCoreError)):
            found: BaseException = current  # botocore is untyped: keep the type known
            return found
        current = current.__cause__ or current.__context__
        seen += 1
    return exc


def classify(exc: BaseException, config: SinkConfig) -> SinkError:
    """Turn an exception from boto3 into a SinkError with a message saying what to fix."""
    if isinstance(exc, UnexpectedAnswer):
        return SinkError(
            FailureKind.INTEGRITY, f"the S3 store answered unexpectedly: {exc}; will retry"
        )
    cause = _root_cause(exc)
    endpoint = config.endpoint_display
    if isinstance(cause, ClientError):
        return _client_error(cause, config)
    if isinstance(cause, (ConnectTimeoutError, ReadTimeoutError)):
        return SinkError(
            FailureKind.TIMEOUT,
            f"the S3 endpoint {endpoint} did not answer in time; check that it is up and "
            f"reachable, or raise [s3] connect_timeout_s / read_timeout_s",
        )
    if isinstance(cause, ValueError) and "endpoint" in str(cause).lower():
        return SinkError(
            FailureKind.ENDPOINT,
            f"the S3 client refuses the endpoint {endpoint} (a host name may use letters, "
            f"digits, dots and hyphens only); fix {ENV_PREFIX}ENDPOINT",
        )
    if isinstance(cause, (EndpointConnectionError, BotoConnectionError, ConnectionClosedError)):
        return SinkError(
            FailureKind.UNREACHABLE,
            f"cannot reach the S3 endpoint {endpoint}; check that the server is running and "
            f"that {ENV_PREFIX}ENDPOINT is right",
        )
    return SinkError(FailureKind.INTERNAL, f"upload failed: {type(cause).__name__}")


def _client_error(exc: ClientError, config: SinkConfig) -> SinkError:
    error = exc.response.get("Error", {}) or {}
    code = str(error.get("Code", "") or "")
    status = int((exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode", 0) or 0)
    endpoint, bucket, key_hint = config.endpoint_display, config.bucket, redact(config.access_key)
    if code == "InvalidAccessKeyId":
        return SinkError(
            FailureKind.CREDENTIALS,
            f"the S3 store at {endpoint} does not know access key {key_hint}; set "
            f"{ENV_PREFIX}ACCESS_KEY and {ENV_PREFIX}SECRET_KEY to a valid key pair",
        )
    if code == "SignatureDoesNotMatch":
        return SinkError(
            FailureKind.CREDENTIALS,
            f"the S3 store at {endpoint} rejected the signature made with access key "
            f"{key_hint}; set {ENV_PREFIX}SECRET_KEY to that key's secret",
        )
    if code in ("NoSuchBucket",) or (status == 404 and code in ("404", "NotFound")):
        return SinkError(
            FailureKind.BUCKET,
            f"bucket {bucket!r} does not exist at {endpoint}; create it (for example "
            f"`mc mb <alias>/{bucket}` or `aws s3 mb s3://{bucket}`) or set {ENV_PREFIX}BUCKET",
        )
    if code in ("RequestTimeTooSkewed",):
        return SinkError(
            FailureKind.CLOCK, "the S3 store rejected the request time; fix the system clock"
        )
    if code in ("AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraint"):
        region = error.get("Region") or "the bucket's region"
        return SinkError(
            FailureKind.REGION,
            f"bucket {bucket!r} is in another region; set region = {region!r} in the [s3] "
            f"table of sessiond's config",
        )
    if code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
        return SinkError(
            FailureKind.DENIED,
            f"access denied writing to bucket {bucket!r} with access key {key_hint}; allow "
            f"s3:PutObject on {bucket}/{config.prefix}* for that key",
        )
    if code in ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch") or "Checksum" in code:
        return SinkError(
            FailureKind.INTEGRITY, f"the S3 store received corrupted data ({code}); will retry"
        )
    if status >= 500 or code in ("SlowDown", "InternalError", "ServiceUnavailable"):
        return SinkError(
            FailureKind.SERVER, f"the S3 store at {endpoint} failed: {code or 'error'} ({status})"
        )
    return SinkError(
        FailureKind.REQUEST, f"the S3 store at {endpoint} refused the upload: {code} ({status})"
    )


class Pass(NamedTuple):
    """The rate limiter's answer for one log line."""

    let_through: bool
    held_back: int  # lines held back since the last one let through (0 when not let through)


class RateLimiter:
    """Lets a log line through the first time per topic, then at most once per interval.

    A topic is a FailureKind or another name (a ledger write, a retry); a setup kind gets the
    longer interval.
    """

    def __init__(self, interval_s: float, setup_interval_s: float) -> None:
        self._interval = interval_s
        self._setup_interval = setup_interval_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, topic: str, now: float | None = None) -> Pass:
        now = time.monotonic() if now is None else now
        interval = self._setup_interval if topic in _SETUP_KINDS else self._interval
        last = self._last.get(topic)
        if last is not None and now - last < interval:
            self._held[topic] = self._held.get(topic, 0) + 1
            return Pass(let_through=False, held_back=0)
        self._last[topic] = now
        return Pass(let_through=True, held_back=self._held.pop(topic, 0))

    def reset(self) -> None:
        """After a success: the next failure of any kind is news again."""
        self._last.clear()
        self._held.clear()
