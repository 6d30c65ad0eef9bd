"""What went wrong with an upload, said so that an operator knows what to fix.

Messages are built from the error code, the HTTP status and the sink's own non-secret settings
only: never from the config object, the request, or the exception's text, which can carry
signed headers. `Scrubber` is a second line of defence over every message that leaves the sink.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

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

# Kinds of failure. The setup ones are not fixed by retrying, only by changing the setup.
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
SETUP_KINDS = frozenset({CREDENTIALS, BUCKET, DENIED, REGION, CLOCK, ENDPOINT})


class UnexpectedAnswer(Exception):
    """The store answered a write with something that does not fit it: the object is checked
    and uploaded again. The text says what was expected and found (sizes and ETags only)."""


@dataclass(frozen=True)
class SinkError:
    kind: str
    message: str

    @property
    def setup(self) -> bool:
        """True when only a change of the setup (keys, bucket, policy, clock) can fix it."""
        return self.kind in SETUP_KINDS


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
        return SinkError(INTEGRITY, f"the S3 store answered unexpectedly: {exc}; will retry")
    cause = _root_cause(exc)
    endpoint = config.endpoint_display
    if isinstance(cause, ClientError):
        return _client_error(cause, config)
    if isinstance(cause, (ConnectTimeoutError, ReadTimeoutError)):
        return SinkError(
            TIMEOUT,
            f"the S3 endpoint {endpoint} did not answer in time; check that it is up and "
            f"reachable, or raise [s3] connect_timeout_s / read_timeout_s",
        )
    if isinstance(cause, ValueError) and "endpoint" in str(cause).lower():
        return SinkError(
            ENDPOINT,
            f"the S3 client refuses the endpoint {endpoint} (a host name may use letters, "
            f"digits, dots and hyphens only); fix {ENV_PREFIX}ENDPOINT",
        )
    if isinstance(cause, (EndpointConnectionError, BotoConnectionError, ConnectionClosedError)):
        return SinkError(
            UNREACHABLE,
            f"cannot reach the S3 endpoint {endpoint}; check that the server is running and "
            f"that {ENV_PREFIX}ENDPOINT is right",
        )
    return SinkError(INTERNAL, f"upload failed: {type(cause).__name__}")


def _client_error(exc: ClientError, config: SinkConfig) -> SinkError:
    error = exc.response.get("Error", {}) or {}
    code = str(error.get("Code", "") or "")
    status = int((exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode", 0) or 0)
    endpoint, bucket, key_hint = config.endpoint_display, config.bucket, redact(config.access_key)
    if code == "InvalidAccessKeyId":
        return SinkError(
            CREDENTIALS,
            f"the S3 store at {endpoint} does not know access key {key_hint}; set "
            f"{ENV_PREFIX}ACCESS_KEY and {ENV_PREFIX}SECRET_KEY to a valid key pair",
        )
    if code == "SignatureDoesNotMatch":
        return SinkError(
            CREDENTIALS,
            f"the S3 store at {endpoint} rejected the signature made with access key "
            f"{key_hint}; set {ENV_PREFIX}SECRET_KEY to that key's secret",
        )
    if code in ("NoSuchBucket",) or (status == 404 and code in ("404", "NotFound")):
        return SinkError(
            BUCKET,
            f"bucket {bucket!r} does not exist at {endpoint}; create it (for example "
            f"`mc mb <alias>/{bucket}` or `aws s3 mb s3://{bucket}`) or set {ENV_PREFIX}BUCKET",
        )
    if code in ("RequestTimeTooSkewed",):
        return SinkError(CLOCK, "the S3 store rejected the request time; fix the system clock")
    if code in ("AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraint"):
        region = error.get("Region") or "the bucket's region"
        return SinkError(
            REGION,
            f"bucket {bucket!r} is in another region; set region = {region!r} in the [s3] "
            f"table of sessiond's config",
        )
    if code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
        return SinkError(
            DENIED,
            f"access denied writing to bucket {bucket!r} with access key {key_hint}; allow "
            f"s3:PutObject on {bucket}/{config.prefix}* for that key",
        )
    if code in ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch") or "Checksum" in code:
        return SinkError(INTEGRITY, f"the S3 store received corrupted data ({code}); will retry")
    if status >= 500 or code in ("SlowDown", "InternalError", "ServiceUnavailable"):
        return SinkError(SERVER, f"the S3 store at {endpoint} failed: {code or 'error'} ({status})")
    return SinkError(REQUEST, f"the S3 store at {endpoint} refused the upload: {code} ({status})")


class RateLimiter:
    """Lets a log line through the first time per kind, then at most once per interval.

    `allow` returns how many lines were held back since the last one let through, or None to
    hold this one back too.
    """

    def __init__(self, interval_s: float, setup_interval_s: float) -> None:
        self._interval = interval_s
        self._setup_interval = setup_interval_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, kind: str, now: float | None = None) -> int | None:
        now = time.monotonic() if now is None else now
        interval = self._setup_interval if kind in SETUP_KINDS else self._interval
        last = self._last.get(kind)
        if last is not None and now - last < interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._held.pop(kind, 0)

    def reset(self) -> None:
        """After a success: the next failure of any kind is news again."""
        self._last.clear()
        self._held.clear()
