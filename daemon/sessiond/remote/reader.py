"""Reading the bucket back: every machine's catalog (one listing plus one GET per catalog,
never one request per session) and a session's objects, each checked against the catalog.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from sessiond.remote import layout
from sessiond.remote.catalog import CatalogFile, ObjectRef, decode_catalog, gunzip
from sessiond.sink import s3
from sessiond.sink.config import SinkConfig
from sessiond.sink.errors import classify

_FETCH_THREADS = 8


class BucketError(Exception):
    """The bucket cannot be read now (unreachable, refused); the message says what to fix."""


class ObjectProblem(Exception):
    """An object a catalog names is missing or not what the catalog says."""


@dataclass(frozen=True)
class Unreadable:
    machine: str
    instance: str
    key: str
    error: str


@dataclass(frozen=True)
class Catalogs:
    found: list[CatalogFile]
    unreadable: list[Unreadable]
    requests: int  # made to the store for this answer


def read_catalogs(client: Any, config: SinkConfig) -> Catalogs:
    prefix = layout.catalogs_prefix(config.prefix)
    keys: list[str] = []
    requests = 0
    try:
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            answer = client.list_objects_v2(Bucket=config.bucket, Prefix=prefix, **extra)
            requests += 1
            keys += [item["Key"] for item in answer.get("Contents", [])]
            token = answer.get("NextContinuationToken")
            if not answer.get("IsTruncated") or not token:
                break
    except Exception as exc:
        raise BucketError(classify(exc, config).message) from None
    names = [_names(prefix, key) for key in keys]
    wanted = [(key, name) for key, name in zip(keys, names, strict=True) if name is not None]
    with ThreadPoolExecutor(max_workers=_FETCH_THREADS) as pool:
        results = list(pool.map(lambda item: _fetch_catalog(client, config, *item), wanted))
    found = [r for r in results if isinstance(r, CatalogFile)]
    unreadable = [r for r in results if isinstance(r, Unreadable)]
    return Catalogs(found, unreadable, requests + len(wanted))


def _names(prefix: str, key: str) -> tuple[str, str] | None:
    rest = key[len(prefix) :]
    machine, _, file_name = rest.partition("/")
    if not file_name.endswith(layout.CATALOG_SUFFIX) or "/" in file_name:
        return None
    return machine, file_name[: -len(layout.CATALOG_SUFFIX)]


def _fetch_catalog(
    client: Any, config: SinkConfig, key: str, names: tuple[str, str]
) -> CatalogFile | Unreadable:
    machine, instance = names
    try:
        data = client.get_object(Bucket=config.bucket, Key=key)["Body"].read()
    except Exception as exc:
        return Unreadable(machine, instance, key, classify(exc, config).message)
    try:
        doc = decode_catalog(gunzip(data))
    except ValueError as exc:
        return Unreadable(machine, instance, key, str(exc)[:300])
    if (doc.machine, doc.instance) != (machine, instance):
        return Unreadable(machine, instance, key, "the catalog names another machine")
    return doc


def fetch_object(client: Any, config: SinkConfig, ref: ObjectRef) -> bytes:
    """The object's bytes, checked for size and MD5. Raises ObjectProblem or BucketError."""
    if ref.size == 0:
        return b""
    try:
        data: bytes = client.get_object(Bucket=config.bucket, Key=ref.key)["Body"].read()
    except ClientError as exc:
        if s3.is_not_found(exc):
            raise ObjectProblem(f"object {ref.key} is missing from the bucket") from None
        raise BucketError(classify(exc, config).message) from None
    except Exception as exc:
        raise BucketError(classify(exc, config).message) from None
    if len(data) != ref.size:
        raise ObjectProblem(
            f"object {ref.key} holds {len(data)} bytes, the catalog says {ref.size}"
        )
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if digest != ref.md5:
        raise ObjectProblem(
            f"object {ref.key} is corrupt or was rewritten since (MD5 {digest}, the catalog "
            f"says {ref.md5}); another machine with this session may hold a newer copy"
        )
    return data
