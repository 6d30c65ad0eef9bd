"""Nothing is lost to an outage, a restart or a crash; nothing unchanged is sent twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from sessiond.sink.reports import FlushResult
from sessiond.sink.uploader import HistorySink

from tests.support.daemon import wait_for
from tests.support.s3server import LogLines, S3Server, Sessions, new_turns, sink_config


def key(session_id: str) -> str:
    return f"history/{session_id}/history.jsonl"


@pytest.fixture
def sessions(tmp_path: Path) -> Sessions:
    return Sessions(str(tmp_path))


def assert_settled(result: FlushResult) -> None:
    """All changes before the flush are up; `uploaded` counts only those the flush waited for
    (a session already uploaded when it began is not counted)."""
    assert (result.failed, result.pending, result.timed_out) == (0, 0, False), result


def all_current(server: S3Server, bucket: str, sessions: Sessions, ids: list[str]) -> bool:
    return all(server.get(bucket, key(sid)) == sessions.expected(sid) for sid in ids)


def test_an_outage_loses_nothing(
    fresh_s3_server: S3Server, sessions: Sessions, tmp_path: Path
) -> None:
    server = fresh_s3_server
    server.create_bucket("history")
    sink = HistorySink(sink_config(server, "history"), sessions.locate, str(tmp_path / "state"))
    sink.start([])
    try:
        server.stop()
        ids = []
        for number in range(5):
            session = new_turns(number + 1, seed=number)
            sessions.save(session)
            sink.notify(session["id"])
            ids.append(session["id"])
        # each tried and failed at least once
        wait_for(lambda: sink.status().failed >= 5, 30, "five failed attempts")
        status = sink.status()
        assert status.pending + status.in_flight == 5 and status.uploaded == 0
        assert status.last_error is not None
        assert "cannot reach the S3 endpoint" in status.last_error

        server.start()  # same port, bucket made again
        result = sink.flush(60)

        # A retry may land between the restart and the flush: the flush counts only the rest.
        assert_settled(result)
        assert all_current(server, "history", sessions, ids)
        assert (sink.status().uploaded, sink.status().last_error) == (5, None)
    finally:
        sink.stop(5)


def test_a_restart_with_nothing_changed_uploads_nothing(
    s3_server: S3Server, s3_bucket: str, sessions: Sessions, tmp_path: Path
) -> None:
    config, state = sink_config(s3_server, s3_bucket), str(tmp_path / "state")
    for seed in range(3):
        sessions.save(new_turns(2, seed=seed))
    ids = list(sessions.paths)
    first = HistorySink(config, sessions.locate, state)
    first.start(ids)  # no ledger yet: all three differ
    assert_settled(first.flush(30))
    assert first.status().uploaded == 3
    first.stop(5)

    second = HistorySink(config, sessions.locate, state)
    second.start(ids)
    try:
        assert second.flush(30).fields() == {
            "uploaded": 0,
            "failed": 0,
            "pending": 0,
            "timed_out": False,
        }
        status = second.status()
        assert (status.uploaded, status.unchanged, status.pending) == (0, 0, 0)
    finally:
        second.stop(5)


# A sink in a process of its own, killed with SIGKILL: it reads commands on stdin.
_CHILD = """
import json, sys
from sessiond.sink.uploader import HistorySink
from sessiond.sink.config import SinkConfig
config = SinkConfig(**json.loads(sys.argv[1]))
paths = json.loads(sys.argv[2])
sink = HistorySink(config, paths.get, sys.argv[3])
sink.start(list(paths))
for line in sys.stdin:
    verb, _, arg = line.strip().partition(" ")
    if verb == "notify":
        sink.notify(arg)
        print("ok", flush=True)
    elif verb == "flush":
        result = sink.flush(30)
        print(json.dumps({**result.fields(), "total": sink.status().uploaded}), flush=True)
"""


def test_a_killed_sink_leaves_nothing_behind(
    s3_server: S3Server, s3_bucket: str, sessions: Sessions, tmp_path: Path
) -> None:
    docs = [new_turns(1, seed=n) for n in range(4)]
    for doc in docs:
        sessions.save(doc)
    ids = [doc["id"] for doc in docs]
    state = str(tmp_path / "state")
    # A long debounce, so the kill lands while the later saves wait to be uploaded.
    config = sink_config(s3_server, s3_bucket, debounce_s=30.0, max_delay_s=60.0)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            json.dumps(asdict(config)),
            json.dumps(sessions.paths),
            state,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("flush\n")
        child.stdin.flush()
        assert json.loads(child.stdout.readline())["total"] == 4
        for doc in docs[:2]:  # saved again, notified, then the daemon dies
            doc["messages"].append({"role": "user", "content": [{"type": "text", "text": "more"}]})
            sessions.save(doc)
            child.stdin.write(f"notify {doc['id']}\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "ok"
        docs[2]["messages"].append({"role": "user", "content": [{"type": "text", "text": "x"}]})
        sessions.save(docs[2])  # saved and never notified: the watcher had not seen it yet
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert not all_current(s3_server, s3_bucket, sessions, ids)

    again = HistorySink(config, sessions.locate, state)
    again.start(ids)
    try:
        assert_settled(again.flush(30))
        assert all_current(s3_server, s3_bucket, sessions, ids)
        assert again.status().uploaded == 3  # the untouched fourth was not sent again
    finally:
        again.stop(5)


def test_stop_tries_what_is_pending_within_its_deadline(
    s3_server: S3Server, s3_bucket: str, sessions: Sessions, tmp_path: Path
) -> None:
    config = sink_config(s3_server, s3_bucket, debounce_s=30.0, max_delay_s=60.0)
    sink = HistorySink(config, sessions.locate, str(tmp_path / "state"))
    sink.start([])
    session = new_turns(2)
    sessions.save(session)
    sink.notify(session["id"])
    assert sink.status().pending == 1
    sink.stop(10)  # the debounce is 30 s: stop does not wait for it
    assert s3_server.get(s3_bucket, key(session["id"])) == sessions.expected(session["id"])
    wait_for(lambda: sink.status().in_flight == 0, 1, "no upload in flight")


def test_stop_with_the_store_down_is_quick_and_leaves_the_rest_for_the_next_start(
    fresh_s3_server: S3Server, sessions: Sessions, tmp_path: Path, sink_log: LogLines
) -> None:
    server, state = fresh_s3_server, str(tmp_path / "state")
    server.create_bucket("history")
    config = sink_config(server, "history")
    sink = HistorySink(config, sessions.locate, state)
    sink.start([])
    server.stop()
    session = new_turns(1)
    sessions.save(session)
    sink.notify(session["id"])
    started = time.monotonic()
    sink.stop(15)
    assert time.monotonic() - started < 10  # one try, not retries until the deadline
    assert sink_log.events("sink_stopped")[-1]["pending_left"] == 1

    server.start()
    again = HistorySink(config, sessions.locate, state)
    again.start(list(sessions.paths))
    try:
        assert_settled(again.flush(30))
        assert again.status().uploaded == 1
        assert all_current(server, "history", sessions, [session["id"]])
    finally:
        again.stop(5)
