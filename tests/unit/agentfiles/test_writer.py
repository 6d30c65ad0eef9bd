"""The writer's timing, on an index fed directly (no watcher): coalescing, the longest delay,
stop, and the recognition of its own writes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from sessiond.agentfiles import AgentFiles
from sessiond.index.decode import decode_session
from sessiond.index.records import FileVersion, SessionRecord
from sessiond.index.store import SessionIndex

from tests.support.agent_sim import AgentSim, new_session
from tests.support.agentfiles_harness import CACHE, INDEX, expected_cache, expected_index, read_json


def indexed_folder(tmp_path: Path, count: int = 3) -> tuple[SessionIndex, str]:
    """A folder with sessions saved the agent's way, and an index holding them."""
    folder = os.path.realpath(tmp_path / "sessions")
    sim = AgentSim(global_root=str(tmp_path / "g"), write_index=False, write_journal=False)
    index = SessionIndex()
    for i in range(count):
        path = sim.save(folder, new_session(str(tmp_path / f"ws{i % 2}")))
        data = Path(path).read_bytes()
        version = FileVersion.of(os.stat(path))
        index.upsert(SessionRecord.from_decoded(path, version, decode_session(data)))
    return index, folder


def test_a_burst_of_notifications_is_one_write(tmp_path: Path) -> None:
    index, folder = indexed_folder(tmp_path)
    files = AgentFiles(index)
    files.start()
    try:
        for _ in range(1000):
            files.notify(folder)
        assert files.wait_idle(10)
        status = files.status()
    finally:
        files.stop()
    assert status["workspace_index"]["writes"] == status["listing_cache"]["writes"] == 1
    assert status["workspace_index"]["checks"] == 1
    assert read_json(os.path.join(folder, INDEX))["entries"] == expected_index(folder)
    assert read_json(os.path.join(folder, CACHE))["entries"] == expected_cache(folder)


def test_a_steady_stream_is_looked_at_once_per_max_delay(tmp_path: Path) -> None:
    index, folder = indexed_folder(tmp_path)
    files = AgentFiles(index, debounce_s=0.1, max_delay_s=0.3)
    files.start()
    pace = threading.Event()  # never set: its wait() paces the stream, it syncs nothing
    try:
        started = time.monotonic()
        while time.monotonic() - started < 1.5:
            files.notify(folder)
            pace.wait(0.02)  # closer than the debounce: the folder never goes quiet
        elapsed = time.monotonic() - started
        assert files.wait_idle(10)
        checks = files.status()["workspace_index"]["checks"]
    finally:
        files.stop()
    # At most one look per max delay while the stream lasts, plus one after it.
    assert 2 <= checks <= elapsed / 0.3 + 2


def test_stop_writes_what_is_pending(tmp_path: Path) -> None:
    index, folder = indexed_folder(tmp_path)
    files = AgentFiles(index, debounce_s=60, max_delay_s=60)
    files.start()
    files.notify(folder)
    files.stop()
    assert read_json(os.path.join(folder, INDEX))["entries"] == expected_index(folder)
    files.notify(folder)  # after stop: ignored, not left pending forever
    assert files.wait_idle(0)


def test_own_write_is_recognised_and_an_in_place_rewrite_is_not(tmp_path: Path) -> None:
    index, folder = indexed_folder(tmp_path)
    files = AgentFiles(index, debounce_s=0, max_delay_s=0)
    cache = os.path.join(folder, CACHE)
    files.start()
    try:
        files.notify(folder)
        assert files.wait_idle(10)
        before = files.status()["listing_cache"]
        files.agent_file_changed(cache)  # the event of our own write
        assert files.wait_idle(10)
        assert files.status()["listing_cache"] == before
        # The agent rewrites the file in place (same inode), same size, and the clock may not
        # have ticked: the stamp matches, the bytes do not.
        data = Path(cache).read_bytes()
        st = os.stat(cache)
        with open(cache, "r+b") as fh:
            fh.write(data.replace(b'"message_count":0', b'"message_count":7', 1))
        os.utime(cache, ns=(st.st_atime_ns, st.st_mtime_ns))
        files.agent_file_changed(cache)
        assert files.wait_idle(10)
        after = files.status()["listing_cache"]
    finally:
        files.stop()
    assert (after["checks"], after["writes"]) == (before["checks"] + 1, before["writes"] + 1)
    assert after["repaired"] == before["repaired"] + 1
    assert read_json(cache)["entries"] == expected_cache(folder)
