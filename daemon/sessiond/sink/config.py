"""The sink's settings: the agent's own S3 variables plus sessiond's `[s3]` config table.

The sink is on exactly when the agent's would be (codetether-format §5.1): the four required
`CODETETHER_HISTORY_S3_*` variables set and non-blank. Everything sessiond adds (region,
addressing, timing, sizes) comes from the config file and has a default that works with MinIO.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sessiond.logs import redact, redact_urls

ENV_PREFIX = "CODETETHER_HISTORY_S3_"
REQUIRED_ENV = ("ENDPOINT", "BUCKET", "ACCESS_KEY", "SECRET_KEY")
DEFAULT_PREFIX = "history/"
_ADDRESSING_STYLES = ("path", "virtual", "auto")
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's smallest multipart part


@dataclass(frozen=True)
class SinkConfig:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    prefix: str = DEFAULT_PREFIX
    region: str = "us-east-1"
    addressing_style: str = "path"
    debounce_s: float = 0.25
    max_delay_s: float = 2.0
    concurrency: int = 4
    multipart_threshold: int = 64 * 1024 * 1024
    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 60.0
    stop_deadline_s: float = 20.0
    multipart_chunksize: int = 16 * 1024 * 1024
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    delta_uploads: bool = True  # off: every upload whole (a store that refuses part copies)
    catalog_interval_s: float = 1.0  # the machine's catalog is rewritten at most this often

    def __post_init__(self) -> None:
        _check(self)

    def __repr__(self) -> str:
        # Never the secret; the access key only as a prefix, enough to tell keys apart.
        return (
            f"SinkConfig(endpoint={self.endpoint_display!r}, bucket={self.bucket!r}, "
            f"prefix={self.prefix!r}, access_key={redact(self.access_key)!r}, "
            f"region={self.region!r}, addressing_style={self.addressing_style!r})"
        )

    __str__ = __repr__

    @property
    def endpoint_display(self) -> str:
        """The endpoint without its user:password part and its query, safe for logs and
        status (`logs.redact_urls`, which never fails, whatever the URL holds)."""
        return redact_urls(self.endpoint)

    def object_key(self, session_id: str) -> str:
        """The agent's `object_key`: `<prefix><id>/history.jsonl`."""
        return f"{self.prefix}{session_id}/history.jsonl"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], settings: Mapping[str, Any] | None = None
    ) -> SinkConfig | None:
        """The sink's config, or None when the agent's variables leave the sink off.

        Raises ValueError for a bad `[s3]` setting; the message names the key.
        """
        values = {name: env.get(ENV_PREFIX + name) for name in REQUIRED_ENV}
        if any(value is None or not value.strip() for value in values.values()):
            return None
        fields: dict[str, Any] = {
            "endpoint": normalize_endpoint(str(values["ENDPOINT"])),
            "bucket": str(values["BUCKET"]),
            "access_key": str(values["ACCESS_KEY"]),
            "secret_key": str(values["SECRET_KEY"]),
            "prefix": normalize_prefix(env.get(ENV_PREFIX + "PREFIX")),
        }
        fields.update(_settings(settings or {}))
        return cls(**fields)


def normalize_prefix(prefix: str | None) -> str:
    """The agent's rule: blank -> `history/`; a `/` is appended when missing."""
    if prefix is None or not prefix.strip():
        return DEFAULT_PREFIX
    return prefix if prefix.endswith("/") else prefix + "/"


def normalize_endpoint(endpoint: str) -> str:
    """The agent's minio client reads a bare host as https; boto3 needs the scheme spelled."""
    endpoint = endpoint.strip()
    if "://" not in endpoint:
        endpoint = "https://" + endpoint
    return endpoint.rstrip("/")


# --- the [s3] table -------------------------------------------------------------------------

_SETTING_TYPES: dict[str, type] = {
    "region": str,
    "addressing_style": str,
    "debounce_s": float,
    "max_delay_s": float,
    "concurrency": int,
    "multipart_threshold": int,
    "multipart_chunksize": int,
    "max_attempts": int,
    "backoff_base_s": float,
    "backoff_max_s": float,
    "stop_deadline_s": float,
    "connect_timeout_s": float,
    "read_timeout_s": float,
    "delta_uploads": bool,
    "catalog_interval_s": float,
}


def _settings(table: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(table) - set(_SETTING_TYPES))
    if unknown:
        known = ", ".join(sorted(_SETTING_TYPES))
        raise ValueError(f"[s3]: unknown setting {', '.join(unknown)} (known: {known})")
    out: dict[str, Any] = {}
    for key, value in table.items():
        want = _SETTING_TYPES[key]
        if want is bool:
            if not isinstance(value, bool):
                raise ValueError(f"[s3] {key} must be true or false")
            out[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"[s3] {key} must be a {want.__name__}")
        if want is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, want):
            raise ValueError(f"[s3] {key} must be a {want.__name__}")
        out[key] = value
    return out


def _check(config: SinkConfig) -> None:
    parts = urllib.parse.urlsplit(config.endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{ENV_PREFIX}ENDPOINT must be an http:// or https:// URL with a host, "
            f"not {config.endpoint_display!r}"
        )
    try:
        parts.port  # noqa: B018 - urllib checks the port only when it is asked for
    except ValueError:
        raise ValueError(
            f"{ENV_PREFIX}ENDPOINT has no valid port (a number from 0 to 65535): "
            f"{config.endpoint_display!r}"
        ) from None
    if config.addressing_style not in _ADDRESSING_STYLES:
        raise ValueError(f"[s3] addressing_style must be one of {', '.join(_ADDRESSING_STYLES)}")
    for name in ("debounce_s", "backoff_base_s", "stop_deadline_s", "catalog_interval_s"):
        if getattr(config, name) < 0:
            raise ValueError(f"[s3] {name} must be >= 0")
    for name in ("max_delay_s", "backoff_max_s", "connect_timeout_s", "read_timeout_s"):
        if getattr(config, name) <= 0:
            raise ValueError(f"[s3] {name} must be > 0")
    if config.concurrency < 1 or config.max_attempts < 1:
        raise ValueError("[s3] concurrency and max_attempts must be >= 1")
    if config.multipart_threshold < MIN_PART_SIZE or config.multipart_chunksize < MIN_PART_SIZE:
        raise ValueError("[s3] multipart_threshold and multipart_chunksize must be >= 5 MiB")
