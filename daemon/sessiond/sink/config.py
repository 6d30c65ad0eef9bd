"""The sink's settings: the agent's own S3 variables plus sessiond's `[s3]` config table.

The sink is on exactly when the agent's would be: the four required
`CODETETHER_HISTORY_S3_*` variables set and non-blank. Everything sessiond adds (region,
addressing, timing, sizes) is the config file's `[s3]` table, `S3Settings` in sessiond/config.py,
with defaults that work with MinIO.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from sessiond.config import DEFAULTS, MIN_PART_SIZE, ConfigError, S3Settings
from sessiond.logs import redact, redact_urls

__all__ = ["DEFAULT_PREFIX", "ENV_PREFIX", "MIN_PART_SIZE", "REQUIRED_ENV", "SinkConfig"]

ENV_PREFIX = "CODETETHER_HISTORY_S3_"
REQUIRED_ENV = ("ENDPOINT", "BUCKET", "ACCESS_KEY", "SECRET_KEY")
DEFAULT_PREFIX = "history/"


@dataclass(frozen=True, kw_only=True)
class SinkConfig(S3Settings):
    """The agent's S3 variables plus the `[s3]` settings (S3Settings, sessiond/config.py:
    their keys, defaults and checks are written there only)."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_endpoint(self)

    def __repr__(self) -> str:
        # Never the secret; the access key only as a prefix, enough to tell keys apart.
        return (
            f"SinkConfig(endpoint={self.endpoint_display!r}, bucket={self.bucket!r}, "
            f"prefix={self.prefix!r}, access_key={redact(self.access_key)!r}, "
            f"region={self.region!r}, addressing_style={self.addressing_style.value!r})"
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
    def from_env(cls, env: Mapping[str, str], s3: S3Settings = DEFAULTS.s3) -> SinkConfig | None:
        """The sink's config, or None when the agent's variables leave the sink off.

        Raises ConfigError (a ValueError) for an endpoint that is no URL; the `[s3]` settings
        were checked when the config file was read.
        """
        values = {name: env.get(ENV_PREFIX + name) for name in REQUIRED_ENV}
        if any(value is None or not value.strip() for value in values.values()):
            return None
        settings = {f.name: getattr(s3, f.name) for f in dataclasses.fields(S3Settings)}
        return cls(
            endpoint=normalize_endpoint(str(values["ENDPOINT"])),
            bucket=str(values["BUCKET"]),
            access_key=str(values["ACCESS_KEY"]),
            secret_key=str(values["SECRET_KEY"]),
            prefix=normalize_prefix(env.get(ENV_PREFIX + "PREFIX")),
            **settings,
        )


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


def _check_endpoint(config: SinkConfig) -> None:
    parts = urllib.parse.urlsplit(config.endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{ENV_PREFIX}ENDPOINT must be an http:// or https:// URL with a host, "
            f"not {config.endpoint_display!r}"
        )
    try:
        parts.port  # noqa: B018 - urllib checks the port only when it is asked for
    except ValueError:
        raise ConfigError(
            f"{ENV_PREFIX}ENDPOINT has no valid port (a number from 0 to 65535): "
            f"{config.endpoint_display!r}"
        ) from None
