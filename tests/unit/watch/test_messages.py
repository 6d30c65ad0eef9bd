"""The typed messages of the watcher and indexer keep the wire's and the logs' spelling: what a
`rescan` reports (docs/logging.md, "rescan"; docs/protocol.md, "rescan"), what a change is
called, and how a file version compares with what the ledger and the catalog recorded."""

from __future__ import annotations

import os
from pathlib import Path

from sessiond.index.change import Change
from sessiond.index.records import FileVersion
from sessiond.sink.history import row_version
from sessiond.watch.scan_report import Counts, RescanReason, RescanSummary


def test_a_full_rescan_reports_its_reason_duration_and_counts_in_order() -> None:
    counts = Counts(added=1, updated=2, removed=3, unchanged=4, invalid=5, deferred=6)
    fields = RescanSummary(RescanReason.PERIODIC, counts, duration_ms=12.5).fields()
    assert list(fields.items()) == [
        ("reason", "periodic"),
        ("duration_ms", 12.5),
        ("added", 1),
        ("updated", 2),
        ("removed", 3),
        ("unchanged", 4),
        ("invalid", 5),
    ]  # deferred reads are logged on their own, never counted here
    assert all(type(value) in (str, int, float) for value in fields.values())  # no enum leaks


def test_an_overflow_rescan_reports_its_folders_and_no_duration() -> None:
    fields = RescanSummary(RescanReason.OVERFLOW, Counts(added=1), folders=3).fields()
    assert list(fields)[:2] == ["reason", "folders"] and "duration_ms" not in fields
    assert fields["reason"] == "overflow" and fields["folders"] == 3


def test_reasons_and_changes_keep_their_wire_names() -> None:
    assert [r.value for r in RescanReason] == ["request", "periodic", "overflow"]
    assert [c.value for c in Change] == ["saved", "removed"]


def test_a_file_version_matches_the_ledger_whatever_the_device(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(b"{}")
    st = os.stat(path)
    version = FileVersion.of(st)
    assert version.dev == st.st_dev and version.without_device().dev == 0
    assert version.without_device()[1:] == version[1:]
    assert version.same_file(st.st_ino, st.st_size, st.st_mtime_ns)
    assert not version.same_file(st.st_ino, st.st_size + 1, st.st_mtime_ns)
    assert row_version(7) == FileVersion(0, 0, 7, 0)  # a row's revision stands in for a file's
    assert not row_version(7).same_file(0, 8, 0)
