"""The listing cache's planner keeps nothing per session between recomputations: its entries
are recomputed each time (chrono's fast path makes that cheap), so a daemon serving many
sessions holds no copy of their `.listing_cache.json` entries."""

from __future__ import annotations

import gc
import tracemalloc
from dataclasses import dataclass
from typing import Any, cast

from sessiond.agentfiles import formats
from sessiond.agentfiles import listing_cache as cache_rules
from sessiond.index.records import SessionRecord

COUNT = 2_000


@dataclass
class _Record:
    """The fields a listing cache entry is made of (SessionRecord's construction is not the
    point here, so the test does not depend on it)."""

    file_name: str
    session_id: str
    title: str | None
    created_at: str
    updated_at: str
    message_count: int
    agent: str
    directory: str | None
    mtime_ns: int
    size: int


def _records(count: int) -> list[SessionRecord]:
    made = []
    for i in range(count):
        session_id = f"{i:08x}-0000-4000-8000-000000000000"
        when = f"2026-08-{1 + i % 28:02d}T14:{i % 60:02d}:07.{i:09d}Z"
        record = _Record(
            f"{session_id}.json", session_id, f"t{i}", when, when, i, "build", "/w", i, 100 + i
        )
        made.append(cast(SessionRecord, record))
    return made


def test_planner_keeps_nothing_per_session() -> None:
    records = _records(COUNT)
    planner = cache_rules.Planner()
    current = planner("/f", records, {})
    assert len(current) == COUNT
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(2):  # a first recomputation and one with the file already true
            wanted = planner("/f", records, current)
            assert wanted == current
        del wanted
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 2 * COUNT, f"{kept} bytes kept for {COUNT} sessions"  # < 2 bytes each


def test_planner_recomputes_each_time() -> None:
    """A record's entry follows the record, not what an earlier call made of it."""
    records = _records(3)
    planner = cache_rules.Planner()
    first = planner("/f", records, {})
    changed: Any = records[1]
    changed.title, changed.size = "renamed", 7
    second = planner("/f", records, first)
    key = f"/f/{changed.file_name}"
    assert second[key] == formats.cache_entry(records[1])
    assert second[key]["summary"]["title"] == "renamed" and second[key]["size"] == 7
    assert {k: v for k, v in second.items() if k != key} == {
        k: v for k, v in first.items() if k != key
    }
