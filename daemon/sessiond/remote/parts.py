"""Uploading what rebuilds a session beside its history: the parts that changed since their
last upload, each as the history is (a delta when it only grew, else whole), then the
session's entry in the catalog (docs/remote.md).

Runs inside the sink's upload attempt (sink/attempt.py), so it is coalesced, single-flight per
session and retried exactly like the history. The parts go up before the history and the
catalog entry only after both, so the catalog never names an object that is not there yet;
a crash in between leaves a file whose catalog entry is missing or stale, which `needs` reports
at the next start.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sessionctl.document import InvalidSession

from sessiond.index.decode import decode_session
from sessiond.index.records import FileVersion, SessionRecord
from sessiond.remote import layout
from sessiond.remote.catalog import CatalogEntry, CatalogKeeper, ObjectRef
from sessiond.remote.split import SplitError, cut
from sessiond.sink import s3
from sessiond.sink.config import SinkConfig
from sessiond.sink.delta import abort_left_open, eligible, upload_delta
from sessiond.sink.history import History, UnreadableSession, fingerprint
from sessiond.sink.ledger import Ledger, LedgerEntry

REMOTE_LEDGER_NAME = "remote.ledger"


@dataclass
class Prepared:
    """The parts of one version of a session, uploaded; the catalog entry still to publish."""

    header: dict[str, Any]
    updated_ns: int
    objects: dict[str, ObjectRef]
    exact: bool
    sent: int = 0  # bytes of parts sent over the network
    uploaded: list[str] = field(default_factory=list)


class RemoteParts:
    def __init__(
        self, config: SinkConfig, ledger: Ledger, catalog: CatalogKeeper, instance: str
    ) -> None:
        self._config = config
        self.ledger = ledger
        self.catalog = catalog
        self._instance = instance
        self._counts_lock = threading.Lock()  # workers publish at once
        self._sent = 0
        self._uploads = 0

    def start(self, client: Any, known_ids: set[str]) -> None:
        self.ledger.load()
        abort_left_open(client, self._config, self.ledger, None)  # cut short by a crash
        self.catalog.load()
        self.catalog.start(client, known_ids)

    def needs(self, session_id: str, stat: FileVersion | None) -> bool:
        """Whether the catalog does not describe the file as it stands."""
        entry = self.catalog.get(session_id)
        if entry is None or stat is None:
            return True
        return not stat.same_file(*entry.source)

    def prepare(self, client: Any, session_id: str, history: History) -> Prepared:
        """Upload the parts of `history`'s file that changed. Raises UnreadableSession for a
        file that is not a whole session, the store's error for a failed upload."""
        data = history.document
        try:
            decoded = decode_session(data)
            parts = cut(data, history.body)
        except (InvalidSession, SplitError) as exc:
            raise UnreadableSession(str(exc)) from None
        st = history.stat
        record = SessionRecord.from_decoded(
            "/" + session_id + ".json", st.without_device(), decoded
        )
        header = record.header()
        header["path"] = history.path or header["path"]
        prepared = Prepared(header, record.updated_ns, {}, parts.exact)
        bodies = {
            layout.HEAD: parts.head,
            layout.PAGES: parts.pages,
            layout.TOOL_USES: parts.tool_uses,
        }
        for name, body in bodies.items():
            if body is not None:
                prepared.objects[name] = self._upload(client, session_id, name, body, st, prepared)
        prepared.objects[layout.HISTORY] = ObjectRef(
            layout.history_key(self._config.prefix, session_id),
            len(history.body),
            history.fingerprint,
        )
        return prepared

    def _upload(
        self,
        client: Any,
        session_id: str,
        name: str,
        body: bytes,
        st: FileVersion,
        prepared: Prepared,
    ) -> ObjectRef:
        key = layout.part_key(self._config.prefix, session_id, self._instance, name)
        ledger_key = f"{session_id}/{name}"
        md5 = fingerprint(body)
        previous = self.ledger.get(ledger_key)
        if not body:
            return ObjectRef("", 0, md5)  # nothing to store: restore splices an empty array
        ref = ObjectRef(key, len(body), md5)
        if previous is not None and previous.fp == md5 and previous.bytes == len(body):
            return ref  # as uploaded before
        abort_left_open(client, self._config, self.ledger, key)
        grew = (
            self._config.delta_uploads
            and previous is not None
            and eligible(previous, len(body))
            and fingerprint(memoryview(body)[: previous.bytes]) == previous.fp
        )
        etag, md5_etags, sent = "", False, len(body)
        if grew:
            assert previous is not None
            try:
                done = upload_delta(client, self._config, self.ledger, key, body, previous)
            except Exception:
                grew = False  # whole below; a transport failure fails the whole upload too
            else:
                etag, md5_etags, sent = done.etag, done.md5_etags, done.sent
        if not grew:
            put = s3.put_history(client, self._config, key, body)
            etag = put.etag
            md5_etags = not put.multipart and s3.same_etag(etag, md5)
        self.ledger.record(
            ledger_key,
            LedgerEntry(
                md5,
                len(body),
                st.ino,
                st.size,
                st.mtime_ns,
                time.time(),
                etag=etag,
                md5_etags=md5_etags,
            ),
        )
        prepared.sent += sent
        prepared.uploaded.append(name)
        return ref

    def publish(self, session_id: str, prepared: Prepared, stat: FileVersion) -> None:
        """Both the parts and the history are in the store: name them in the catalog."""
        with self._counts_lock:
            self._sent += prepared.sent
            self._uploads += len(prepared.uploaded)
        self.catalog.update(
            session_id,
            CatalogEntry(
                prepared.header,
                prepared.updated_ns,
                prepared.objects,
                prepared.exact,
                (stat.ino, stat.size, stat.mtime_ns),
            ),
        )

    def forget(self, session_id: str) -> None:
        """The session is gone from this machine: it leaves the catalog (its objects stay)."""
        self.ledger.forget(
            f"{session_id}/{name}" for name in (layout.HEAD, layout.PAGES, layout.TOOL_USES)
        )
        self.catalog.forget(session_id)

    def status(self) -> dict[str, Any]:
        return {
            **self.catalog.status().fields(),
            "part_uploads": self._uploads,
            "part_bytes_sent": self._sent,
        }
