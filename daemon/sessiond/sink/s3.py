"""Talking to the S3 store: the boto3 client, one history upload, and the doctor's check.

Settings chosen for S3-compatible stores such as MinIO: path-style addressing, checksums only
where an operation requires them (newer botocore adds CRC headers by default that some stores
reject), retries and timeouts set explicitly. Integrity is checked by the store: a single PUT
carries Content-MD5, multipart parts carry a CRC32 checksum.
"""

from __future__ import annotations

import base64
import hashlib
import io
import urllib.parse
from dataclasses import dataclass
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from sessiond.sink.config import ENV_PREFIX, SinkConfig
from sessiond.sink.errors import Scrubber, UnexpectedAnswer, classify

# What the agent's minio client sends (docs/agent-files.md, "The history object").
CONTENT_TYPE = "application/octet-stream"
CHECK_KEY_NAME = ".sessiond-check"
_CHECK_BODY = b"sessiond doctor: this object is rewritten by every check\n"
_PART_CONCURRENCY = 4
_WHAT = "history sink (S3)"  # how `sessiond doctor` names this check


def make_client(
    config: SinkConfig,
    *,
    max_attempts: int | None = None,
    connect_timeout_s: float | None = None,
    read_timeout_s: float | None = None,
) -> Any:
    """A thread-safe S3 client for `config` (own boto3 session: the default one is not)."""
    botocore_config = Config(
        region_name=config.region,
        s3={"addressing_style": config.addressing_style},
        retries={"mode": "standard", "max_attempts": max_attempts or config.max_attempts},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=connect_timeout_s or config.connect_timeout_s,
        read_timeout=read_timeout_s or config.read_timeout_s,
        max_pool_connections=max(10, config.concurrency * _PART_CONCURRENCY),
        user_agent_extra="sessiond",
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=config.endpoint,
        aws_access_key_id=config.access_key,
        aws_secret_access_key=config.secret_key,
        region_name=config.region,
        config=botocore_config,
    )


@dataclass(frozen=True)
class PutResult:
    multipart: bool
    etag: str  # as the store reported it; "" when it did not say


@dataclass(frozen=True)
class ObjectHead:
    size: int
    etag: str


def content_md5(body: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")


def same_etag(a: str, b: str) -> bool:
    """ETags compare without their quotes (stores differ in quoting them)."""
    return bool(a) and a.strip('"') == b.strip('"')


def is_not_found(exc: BaseException) -> bool:
    if not isinstance(exc, ClientError):
        return False
    code = str((exc.response.get("Error", {}) or {}).get("Code", ""))
    status = (exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode")
    return code in ("404", "NoSuchKey", "NotFound") or status == 404


def head(client: Any, config: SinkConfig, key: str) -> ObjectHead | None:
    """Size and ETag of the object at `key`; None when there is none. Raises for the rest."""
    try:
        response = client.head_object(Bucket=config.bucket, Key=key)
    except ClientError as exc:
        # A HEAD has no body: a missing bucket also reads as 404; the upload then says so.
        if is_not_found(exc):
            return None
        raise
    return ObjectHead(int(response.get("ContentLength", -1)), str(response.get("ETag", "")))


def put_history(client: Any, config: SinkConfig, key: str, body: bytes) -> PutResult:
    """Upload `body` to `key`, as one PUT or, from the threshold on, multipart.

    A multipart upload's ETag is read back with a HEAD (the transfer manager does not return
    it), which also checks the size the store holds.
    """
    if len(body) < config.multipart_threshold:
        response = client.put_object(
            Bucket=config.bucket,
            Key=key,
            Body=body,
            ContentMD5=content_md5(body),
            ContentType=CONTENT_TYPE,
        )
        return PutResult(multipart=False, etag=str(response.get("ETag", "")))
    transfer = TransferConfig(
        multipart_threshold=config.multipart_threshold,
        multipart_chunksize=config.multipart_chunksize,
        max_concurrency=_PART_CONCURRENCY,
        use_threads=True,
    )
    # BytesIO over the body shares its buffer; the transfer manager reads it part by part and
    # aborts the multipart upload if a part fails.
    client.upload_fileobj(
        io.BytesIO(body),
        config.bucket,
        key,
        ExtraArgs={"ContentType": CONTENT_TYPE, "ChecksumAlgorithm": "CRC32"},
        Config=transfer,
    )
    found = head(client, config, key)
    if found is None or found.size != len(body):
        raise UnexpectedAnswer(f"after a multipart upload the store holds {found}")
    return PutResult(multipart=True, etag=found.etag)


def check(config: SinkConfig) -> list[str]:
    """What stops the sink from working, each with what to fix; [] when all is well.

    Writes (and rewrites) one small object, `<prefix>.sessiond-check`: the only way to know that
    the key may write is to write.
    """
    scrub = Scrubber(config.secret_key, config.access_key)
    problems: list[str] = []
    path = urllib.parse.urlsplit(config.endpoint).path
    if path not in ("", "/"):
        problems.append(
            f"{_WHAT}: {ENV_PREFIX}ENDPOINT has a path ({path!r}); the agent's own client "
            f"refuses that: give scheme://host[:port] only"
        )
    try:
        client = make_client(config, max_attempts=1, connect_timeout_s=3.0, read_timeout_s=10.0)
        client.put_object(
            Bucket=config.bucket,
            Key=config.prefix + CHECK_KEY_NAME,
            Body=_CHECK_BODY,
            ContentMD5=content_md5(_CHECK_BODY),
            ContentType=CONTENT_TYPE,
        )
    except Exception as exc:
        problems.append(f"{_WHAT}: {classify(exc, config).message}")
    return [scrub(problem) for problem in problems]
