"""Delta uploads: a history that only grew is rebuilt by the store from the object it already
holds plus the new bytes, so only the new bytes cross the network (docs/logging.md, "Delta
uploads"; README, "The history sink").

One multipart upload on the object's own key: `UploadPartCopy` of the existing object (its
whole range, in parts of at most 5 GiB, guarded by `CopySourceIfMatch` with the ETag sessiond
recorded, after a `HeadObject` that checks size and ETag since some stores ignore the
condition), then the new bytes as the last part(s), each with its Content-MD5, then `Complete`.
The result is verified: the composite ETag against the parts' ETags (and, where the store's
ETags are MD5s, the copied part against the MD5 of the bytes sessiond uploaded before), and a
`HeadObject` for size and ETag. The upload id is in the ledger before the first part is sent;
any failure aborts the upload, and an abort that cannot be made now is made later.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sessiond.logs import log_event
from sessiond.sink import s3
from sessiond.sink.config import MIN_PART_SIZE, SinkConfig
from sessiond.sink.faults import Point
from sessiond.sink.ledger import Ledger, LedgerEntry, OpenUpload

MIN_DELTA_BASE = MIN_PART_SIZE  # the copied part is not the last one: it must be >= 5 MiB
MAX_PART_SIZE = 5 * 1024**3  # S3's largest part, copied or uploaded
MAX_PARTS = 10_000


class DeltaRefused(Exception):
    """The delta cannot be made (the object is not what the ledger says, the store refused a
    step, the result did not verify): upload whole instead. The text is the reason, logged."""


@dataclass(frozen=True)
class DeltaResult:
    etag: str
    sent: int  # bytes of history sent (the new ones)
    copied: int  # bytes the store copied from the existing object
    parts: int
    md5_etags: bool  # the uploaded parts' ETags were their MD5s


def eligible(entry: LedgerEntry | None, body_size: int) -> bool:
    """Whether a delta may be tried on size alone (the prefix is checked by the caller)."""
    return (
        entry is not None
        and bool(entry.etag)
        and entry.bytes >= MIN_DELTA_BASE
        and body_size > entry.bytes
    )


def copy_ranges(size: int) -> list[tuple[int, int]]:
    """Inclusive byte ranges covering `0..size-1` in equal parts of at most 5 GiB each (each
    at least 5 MiB when `size` is)."""
    count = -(-size // MAX_PART_SIZE)
    step = -(-size // count)
    return [(start, min(start + step, size) - 1) for start in range(0, size, step)]


def tail_ranges(start: int, end: int, chunk: int) -> list[tuple[int, int]]:
    """`[start, end)` in parts of `chunk` bytes; only the last may be smaller."""
    return [(first, min(first + chunk, end)) for first in range(start, end, chunk)]


def upload_delta(
    client: Any,
    config: SinkConfig,
    ledger: Ledger,
    key: str,
    body: bytes,
    base: LedgerEntry,
    pause: Callable[[Point], None] = lambda point: None,
) -> DeltaResult:
    """Make the object at `key` equal `body`, whose first `base.bytes` bytes are the object's.

    Raises DeltaRefused (upload whole instead) or the store's error (a failed attempt).
    """
    found = s3.head(client, config, key)
    if found is None:
        raise DeltaRefused("the object is gone from the store")
    if found.size != base.bytes or not s3.same_etag(found.etag, base.etag):
        raise DeltaRefused(
            f"the object was replaced: the store holds {found.size} bytes with ETag "
            f"{found.etag}, sessiond uploaded {base.bytes} bytes with ETag {base.etag}"
        )
    pause(Point.AFTER_HEAD)
    copies = copy_ranges(base.bytes)
    tails = tail_ranges(base.bytes, len(body), config.multipart_chunksize)
    if len(copies) + len(tails) > MAX_PARTS:
        raise DeltaRefused(f"{len(copies) + len(tails)} parts is over S3's {MAX_PARTS}")
    created = client.create_multipart_upload(
        Bucket=config.bucket, Key=key, ContentType=s3.CONTENT_TYPE
    )
    upload_id = str(created["UploadId"])
    try:
        ledger.open_upload(upload_id, key)  # on disk before any part: a crash cannot orphan it
        result = _send_parts(client, config, key, body, base, upload_id, copies, tails, pause)
    except BaseException:
        abort(client, config, ledger, upload_id, key)
        raise
    ledger.close_upload(upload_id)
    return result


def _send_parts(
    client: Any,
    config: SinkConfig,
    key: str,
    body: bytes,
    base: LedgerEntry,
    upload_id: str,
    copies: list[tuple[int, int]],
    tails: list[tuple[int, int]],
    pause: Callable[[Point], None],
) -> DeltaResult:
    common = {"Bucket": config.bucket, "Key": key, "UploadId": upload_id}
    etags: list[str] = []
    for first, last in copies:
        copied = client.upload_part_copy(
            **common,
            PartNumber=len(etags) + 1,
            CopySource={"Bucket": config.bucket, "Key": key},
            CopySourceRange=f"bytes={first}-{last}",
            CopySourceIfMatch=base.etag,
        )
        etags.append(str(copied["CopyPartResult"]["ETag"]))
    if len(copies) == 1 and base.md5_etags and not s3.same_etag(etags[0], base.fp):
        # The store ignored CopySourceIfMatch and copied another object than sessiond's.
        raise DeltaRefused(
            f"the store copied other bytes than sessiond uploaded (part ETag {etags[0]})"
        )
    pause(Point.AFTER_COPY)
    view = memoryview(body)
    md5_etags = True
    for first, end in tails:
        part = view[first:end]
        digest = hashlib.md5(part, usedforsecurity=False)
        sent = client.upload_part(
            **common,
            PartNumber=len(etags) + 1,
            Body=bytes(part),
            ContentMD5=s3.content_md5(part),
        )
        etags.append(str(sent["ETag"]))
        md5_etags = md5_etags and s3.same_etag(etags[-1], digest.hexdigest())
    completed = client.complete_multipart_upload(
        **common,
        MultipartUpload={
            "Parts": [{"ETag": etag, "PartNumber": n} for n, etag in enumerate(etags, 1)]
        },
    )
    etag = str(completed.get("ETag", ""))
    expected = composite_etag(etags)
    if expected is not None and not s3.same_etag(etag, expected):
        raise DeltaRefused(f"the completed object's ETag is {etag}, its parts make {expected}")
    found = s3.head(client, config, key)
    if found is None or found.size != len(body) or not s3.same_etag(found.etag, etag):
        raise DeltaRefused(
            f"after the delta the store holds {found}, not {len(body)} bytes with ETag {etag}"
        )
    return DeltaResult(
        etag=etag,
        sent=len(body) - base.bytes,
        copied=base.bytes,
        parts=len(etags),
        md5_etags=md5_etags,
    )


def composite_etag(part_etags: list[str]) -> str | None:
    """A multipart object's ETag as S3 makes it: the MD5 of the parts' binary MD5s, `-count`.
    None when a part's ETag is not an MD5 in hex (then the store's own rule is unknown)."""
    digests = []
    for etag in part_etags:
        text = etag.strip('"')
        try:
            digests.append(bytes.fromhex(text))
        except ValueError:
            return None
        if len(digests[-1]) != 16:
            return None
    combined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
    return f'"{combined}-{len(part_etags)}"'


def abort(client: Any, config: SinkConfig, ledger: Ledger, upload_id: str, key: str) -> bool:
    """Abort an upload sessiond opened; True once the store has none open under that id.
    One that cannot be aborted now stays in the ledger for a later try."""
    try:
        client.abort_multipart_upload(Bucket=config.bucket, Key=key, UploadId=upload_id)
    except Exception as exc:
        if not _no_such_upload(exc):
            log_event(
                "upload_abort_failed",
                logging.WARNING,
                key=key,
                upload_id=upload_id,
                error=type(exc).__name__,
            )
            return False
    ledger.close_upload(upload_id)
    return True


def abort_left_open(client: Any, config: SinkConfig, ledger: Ledger, key: str | None) -> int:
    """Abort the uploads of `key` (None: of every key) the ledger still has open; how many
    are left."""
    return len(abort_uploads(client, config, ledger, ledger.open_uploads(key)))


def abort_uploads(
    client: Any, config: SinkConfig, ledger: Ledger, uploads: list[OpenUpload]
) -> list[OpenUpload]:
    """Abort each upload; return those that could not be aborted now."""
    left = []
    for upload in uploads:
        if abort(client, config, ledger, upload.upload_id, upload.key):
            log_event("upload_aborted", key=upload.key, upload_id=upload.upload_id)
        else:
            left.append(upload)
    return left


def _no_such_upload(exc: BaseException) -> bool:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error", {}) or {}).get("Code", "")) == "NoSuchUpload"
