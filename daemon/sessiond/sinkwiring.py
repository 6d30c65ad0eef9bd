"""Connects the S3 history sink to the rest of the daemon: it is fed the index's changes, finds
files through the index, and reports to `watch` clients. Without the agent's S3 variables it
is a no-op that still answers `status` and `flush`."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sessionctl.protocol import ErrorCode, ProtocolError, event_message

from sessiond.config import Settings
from sessiond.index.change import Change
from sessiond.index.records import SessionRecord
from sessiond.index.store import SessionIndex
from sessiond.logs import log_event
from sessiond.remote.catalog import CatalogKeeper
from sessiond.remote.layout import machine_instance
from sessiond.remote.parts import REMOTE_LEDGER_NAME, RemoteParts
from sessiond.remote.service import RemoteService
from sessiond.sink.config import SinkConfig
from sessiond.sink.errors import classify
from sessiond.sink.faults import NO_FAULTS, Faults
from sessiond.sink.ledger import Ledger
from sessiond.sink.reports import NOTHING_TO_FLUSH, SINK_OFF, FlushResult, SinkState, UploadReport
from sessiond.sink.uploader import HistorySink


def remote_parts(config: SinkConfig, settings: Settings) -> RemoteParts:
    """What keeps this machine's sessions rebuildable from the bucket (docs/remote.md)."""
    instance = machine_instance(settings.state_dir)
    target = f"{config.endpoint_display}|{config.bucket}|{config.prefix}|{instance}"
    ledger = Ledger(settings.state_dir, target, REMOTE_LEDGER_NAME)
    catalog = CatalogKeeper(
        config, settings.machine_name, instance, settings.state_dir, config.catalog_interval_s
    )
    return RemoteParts(config, ledger, catalog, instance)


class Uploads:
    """The sink as the rest of the daemon sees it; with no sink, `status` and `flush` answer
    that it is off (`server/ops.py`'s UploadService)."""

    def __init__(
        self,
        sink: HistorySink | None,
        config: SinkConfig | None = None,
        faults: Faults = NO_FAULTS,
    ) -> None:
        self._sink = sink
        self._config = config
        self._faults = faults
        self._dead: str | None = None  # why the sink could not start: it uploads nothing

    def remote_service(self, settings: Settings, env: Mapping[str, str]) -> RemoteService | None:
        """What answers `remote_list` and `restore`; None without a bucket."""
        if self._config is None:
            return None
        try:
            return RemoteService(self._config, settings.machine_name, env, self._faults)
        except Exception as exc:  # an endpoint the S3 client refuses: the sink is dead, not us
            self._dead = classify(exc, self._config).message
            log_event("sink_dead", logging.ERROR, error=self._dead)
            return None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        env: Mapping[str, str],
        index: SessionIndex,
        publish: Callable[[dict[str, Any]], None],
    ) -> Uploads:
        # [s3] was checked when the config was read; a bad endpoint raises ConfigError here.
        config = SinkConfig.from_env(env, settings.s3)
        if config is None:
            return cls(None)

        def locate(session_id: str) -> str | None:
            record = index.get(session_id)
            return record.path if record is not None else None

        def emit(report: UploadReport) -> None:
            publish(event_message(report.event, report.fields()))

        faults = Faults.from_env(env, settings.state_dir)  # test-only; see sink/faults.py
        remote = remote_parts(config, settings)
        sink = HistorySink(config, locate, settings.state_dir, emit, faults=faults, remote=remote)
        return cls(sink, config, faults)

    @property
    def enabled(self) -> bool:
        return self._sink is not None

    def on_index_change(self, change: Change, record: SessionRecord) -> None:
        """Indexer listener: every saved session is (re)considered for upload."""
        if self._sink is not None and change is Change.SAVED and self._dead is None:
            self._sink.notify(record.session_id)

    def start(self, known_ids: Iterable[str]) -> None:
        if self._sink is not None:
            try:
                self._sink.start(known_ids)
            except Exception as exc:  # a broken sink must not keep the index from serving
                assert self._config is not None
                self._dead = classify(exc, self._config).message
                log_event("sink_error", logging.ERROR, error=self._dead, exc_info=True)
                log_event("sink_dead", logging.ERROR, error=self._dead)

    def stop(self, deadline_s: float | None = None) -> None:
        if self._sink is not None:
            self._sink.stop(deadline_s)

    def status(self) -> dict[str, Any]:
        if self._sink is None:
            return dict(SINK_OFF)
        status = self._sink.status()
        if self._dead is not None:
            status = dataclasses.replace(
                status, state=SinkState.DEAD, last_error=self._dead, pending=0
            )
        return status.fields()

    def flush(self, timeout: float) -> FlushResult:
        if self._dead is not None:  # nothing will ever be uploaded: say why at once
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"the S3 sink is dead: {self._dead}")
        if self._sink is None:
            return NOTHING_TO_FLUSH
        return self._sink.flush(timeout)
