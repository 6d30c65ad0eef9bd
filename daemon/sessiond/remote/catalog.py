"""This machine's catalog: one small object saying which sessions it holds, their headers and
the objects that make each one (docs/remote.md, "Catalog").

It is gzipped JSON, rewritten coalesced: a change marks it dirty, a writer thread PUTs it at
most once per `interval_s`, or less often for a large catalog so that catalogs never cost more
than CATALOG_BYTES_PER_S (and at once on `flush`). A PUT replaces the object whole, so a reader
sees the old catalog or the new one, never a mix. What was last written is kept in the state folder,
so a restart starts from it; a session whose file is not the version the catalog names is
uploaded again by the sink (`needs`).
"""

from __future__ import annotations

import gzip
import logging
import os
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from sessionctl.agent import format_rfc3339_ns

from sessiond.atomicwrite import write_state_file
from sessiond.logs import log_event
from sessiond.remote import layout
from sessiond.sink import s3
from sessiond.sink.config import SinkConfig
from sessiond.sink.errors import classify

CATALOG_FORMAT = "sessiond-catalog"
CATALOG_VERSION = 1
LOCAL_NAME = "remote.catalog"
CATALOG_BYTES_PER_S = 256 * 1024  # a large catalog is rewritten less often than interval_s
_RETRY_MAX_S = 30.0


class ObjectRef(msgspec.Struct, frozen=True):
    key: str
    size: int
    md5: str  # hex MD5 of the object's bytes, checked by restore


class CatalogEntry(msgspec.Struct, frozen=True):
    header: dict[str, Any]
    updated_ns: int  # updated_at as an instant, for ordering across machines
    objects: dict[str, ObjectRef]  # part name (layout.HEAD, ...) -> object
    exact: bool  # the parts splice back to the file byte for byte
    source: tuple[int, int, int]  # (ino, size, mtime_ns) of the file they were cut from


class CatalogFile(msgspec.Struct):
    format: str
    version: int
    machine: str
    instance: str
    written_at: str
    sessions: dict[str, CatalogEntry]


_DECODER = msgspec.json.Decoder(CatalogFile)
_ENCODER = msgspec.json.Encoder()


def gunzip(data: bytes) -> bytes:
    """Raises ValueError for bytes that are not gzip."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"not gzip: {exc}") from None


def encode_catalog(doc: CatalogFile) -> bytes:
    return gzip.compress(_ENCODER.encode(doc), compresslevel=5, mtime=0)


def decode_catalog(data: bytes) -> CatalogFile:
    """Raises ValueError saying why the bytes are not a catalog."""
    try:
        doc = _DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"not a sessiond catalog: {exc}") from None
    if doc.format != CATALOG_FORMAT or doc.version != CATALOG_VERSION:
        raise ValueError(f"a catalog of another format ({doc.format} {doc.version})")
    return doc


@dataclass(frozen=True)
class CatalogStatus:
    """The keeper's part of the status's `uploads.remote` (docs/remote.md)."""

    machine: str
    instance: str
    sessions: int
    writes: int
    bytes: int  # size of the last catalog written
    pending: bool  # a change is not in the store yet
    error: str | None  # why the last write failed, while it does
    shared_with: list[str]  # other instances that carry this machine's name

    def fields(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "instance": self.instance,
            "catalog_sessions": self.sessions,
            "catalog_writes": self.writes,
            "catalog_bytes": self.bytes,
            "catalog_pending": self.pending,
            "catalog_error": self.error,
            "machine_name_shared_with": list(self.shared_with),
        }


class CatalogKeeper:
    def __init__(
        self, config: SinkConfig, machine: str, instance: str, state_dir: str, interval_s: float
    ) -> None:
        self._config = config
        self.machine, self.instance = machine, instance
        self.key = layout.catalog_key(config.prefix, machine, instance)
        self._path = os.path.join(state_dir, LOCAL_NAME)
        self._interval = interval_s
        self._entries: dict[str, CatalogEntry] = {}
        self._cond = threading.Condition()
        self._version = 0  # grows with every change
        self._written = -1  # the version last in the store
        self._dirty_since: float | None = None
        self._urgent = False  # a flush waits: write without the coalescing delay
        self._last_error: str | None = None
        self._writes = 0
        self._failures = 0  # write attempts that failed, ever
        self._bytes = 0  # size of the last catalog written
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.shared_with: list[str] = []  # other instances that carry this machine's name

    # --- lifecycle ------------------------------------------------------------------------

    def load(self) -> None:
        """Start from what was last written; a corrupt or foreign copy is dropped."""
        try:
            with open(self._path, "rb") as fh:
                doc = decode_catalog(gunzip(fh.read()))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log_event("catalog_rebuilt", logging.WARNING, path=self._path, reason=str(exc)[:200])
            return
        if (doc.machine, doc.instance) != (self.machine, self.instance):
            log_event("catalog_rebuilt", logging.WARNING, path=self._path, reason="another machine")
            return
        with self._cond:
            self._entries = dict(doc.sessions)

    def start(self, client: Any, known_ids: Iterable[str]) -> None:
        known = set(known_ids)
        with self._cond:
            self._client = client
            for session_id in [s for s in self._entries if s not in known]:
                del self._entries[session_id]
            self._changed()  # written once at start: the store may have lost it
        self._thread = threading.Thread(target=self._run, name="sessiond-catalog", daemon=True)
        self._thread.start()

    def stop(self, deadline_s: float) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline_s))

    # --- entries --------------------------------------------------------------------------

    def update(self, session_id: str, entry: CatalogEntry) -> None:
        with self._cond:
            if self._entries.get(session_id) != entry:
                self._entries[session_id] = entry
                self._changed()

    def forget(self, session_id: str) -> None:
        with self._cond:
            if self._entries.pop(session_id, None) is not None:
                self._changed()

    def get(self, session_id: str) -> CatalogEntry | None:
        with self._cond:
            return self._entries.get(session_id)

    def _changed(self) -> None:
        self._version += 1
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()
        self._cond.notify_all()

    # --- writing --------------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Write now what changed before the call; True once it is in the store, False when
        a write made since failed (the writer keeps retrying) or at the deadline."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            wanted, failures = self._version, self._failures
            if wanted > self._written:
                self._urgent = True
                self._cond.notify_all()
            while self._written < wanted:
                if self._failures > failures:
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._cond.wait(remaining)
            return True

    def _run(self) -> None:
        failures = 0
        while True:
            with self._cond:
                while True:
                    if self._version == self._written or self._dirty_since is None:
                        if self._stopping:
                            return
                        self._cond.wait()
                        continue
                    due = self._dirty_since + max(self._interval, self._bytes / CATALOG_BYTES_PER_S)
                    if failures:
                        due = self._dirty_since + min(_RETRY_MAX_S, 0.5 * 2 ** (failures - 1))
                    wait = due - time.monotonic()
                    if wait <= 0 or self._stopping or self._urgent:
                        break
                    self._cond.wait(wait)
                version = self._version
                doc = CatalogFile(
                    CATALOG_FORMAT,
                    CATALOG_VERSION,
                    self.machine,
                    self.instance,
                    format_rfc3339_ns(time.time_ns()) or "",
                    dict(self._entries),
                )
                self._dirty_since = None
                self._urgent = False
            ok = self._write(doc, first=self._writes == 0)
            with self._cond:
                if ok:
                    failures = 0
                    self._written = max(self._written, version)
                    self._writes += 1
                else:
                    failures += 1
                    self._failures += 1
                    if self._dirty_since is None:
                        self._dirty_since = time.monotonic()
                    if self._stopping:
                        self._cond.notify_all()
                        return
                self._cond.notify_all()

    def _write(self, doc: CatalogFile, first: bool) -> bool:
        body = encode_catalog(doc)
        started = time.monotonic()
        try:
            if first:
                self._check_name()
            self._client.put_object(
                Bucket=self._config.bucket,
                Key=self.key,
                Body=body,
                ContentMD5=s3.content_md5(body),
                ContentType="application/gzip",
            )
        except Exception as exc:
            error = classify(exc, self._config).message
            with self._cond:
                repeated = self._last_error == error
                self._last_error = error
            if not repeated:
                log_event("catalog_write_failed", logging.WARNING, key=self.key, error=error)
            return False
        with self._cond:
            self._last_error = None
            self._bytes = len(body)
        try:
            write_state_file(self._path, body)
        except OSError as exc:
            log_event("catalog_write_failed", logging.WARNING, key=self._path, error=str(exc))
        log_event(
            "catalog_written",
            logging.DEBUG,
            key=self.key,
            sessions=len(doc.sessions),
            bytes=len(body),
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        return True

    def _check_name(self) -> None:
        """Another instance with this machine's name: say so (its catalog is left alone)."""
        folder = f"{layout.catalogs_prefix(self._config.prefix)}{self.machine}/"
        answer = self._client.list_objects_v2(Bucket=self._config.bucket, Prefix=folder)
        others = sorted(
            item["Key"][len(folder) : -len(layout.CATALOG_SUFFIX)]
            for item in answer.get("Contents", [])
            if item["Key"].endswith(layout.CATALOG_SUFFIX) and item["Key"] != self.key
        )
        self.shared_with = others
        if others:
            log_event(
                "machine_name_shared",
                logging.WARNING,
                machine=self.machine,
                instance=self.instance,
                others=others,
            )

    def status(self) -> CatalogStatus:
        with self._cond:
            return CatalogStatus(
                machine=self.machine,
                instance=self.instance,
                sessions=len(self._entries),
                writes=self._writes,
                bytes=self._bytes,
                pending=self._version != self._written,
                error=self._last_error,
                shared_with=list(self.shared_with),
            )
