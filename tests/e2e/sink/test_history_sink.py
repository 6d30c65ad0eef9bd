"""HistorySink against a real S3 server: the objects' bytes, coalescing, torn files, multipart.

moto's server mode runs as a subprocess on 127.0.0.1; the sink reaches it over HTTP with boto3
and the tests read the objects back the same way. Sessions are saved the agent's way.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sessiond.sink import s3
from sessiond.sink.reports import FlushResult
from sessiond.sink.uploader import HistorySink

from tests.support.agent_sim import big_session, new_session
from tests.support.daemon import wait_for
from tests.support.paths import DATA
from tests.support.s3server import S3Server, Sessions, new_turns, sink_config

SAMPLES = DATA
SAMPLE_ID = "b7e1d2c3-4a5b-4c6d-8e7f-9012a3b4c5d6"


@pytest.fixture
def sessions(tmp_path: Path) -> Sessions:
    return Sessions(str(tmp_path))


@pytest.fixture
def events() -> list[tuple[str, dict[str, Any]]]:
    return []


@pytest.fixture
def sink(
    s3_server: S3Server,
    s3_bucket: str,
    sessions: Sessions,
    tmp_path: Path,
    events: list[tuple[str, dict[str, Any]]],
) -> Iterator[HistorySink]:
    config = sink_config(s3_server, s3_bucket)
    sink = HistorySink(
        config,
        sessions.locate,
        str(tmp_path / "state"),
        lambda r: events.append((str(r.event), r.fields())),
    )
    sink.start([])
    yield sink
    sink.stop(5)


def assert_settled(result: FlushResult) -> None:
    """All changes before the flush are up (its `uploaded` counts only those it waited for)."""
    assert (result.failed, result.pending, result.timed_out) == (0, 0, False), result


def key(session_id: str) -> str:
    return f"history/{session_id}/history.jsonl"


def test_objects_are_the_agents_bytes(
    sink: HistorySink, sessions: Sessions, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    text = new_session("/home/dev/ünï", title="✓ straße")
    text["messages"].append(
        {"role": "user", "content": [{"type": "text", "text": '日本語 é ✓ 😀 / \\ " \u2028'}]}
    )
    control = new_session("/w")
    control["messages"].append(
        {
            "role": "tool",
            "content": [
                {
                    "type": "tool_result",
                    "tool_call_id": "c",
                    "content": "".join(map(chr, range(32))) + "\x7f",
                }
            ],
        }
    )
    empty = new_session("/w")
    pretty = new_turns(3, seed=7)
    for session in (text, control, empty):
        sessions.save(session)
    pretty_path = sessions.sim.import_codex(str(tmp_path / "codex"), pretty)
    sessions.docs[pretty["id"]] = pretty
    sessions.place(pretty["id"], pretty_path)
    sample_path = str(tmp_path / f"{SAMPLE_ID}.json")
    shutil.copy(SAMPLES / "SYNTHETIC-session-b7e1d2c3.json", sample_path)
    sessions.place(SAMPLE_ID, sample_path)
    ids = [text["id"], control["id"], empty["id"], pretty["id"], SAMPLE_ID]
    for session_id in ids:
        sink.notify(session_id)

    assert_settled(sink.flush(30))

    for session_id in ids[:4]:
        assert s3_server.get(s3_bucket, key(session_id)) == sessions.expected(session_id)
    expected_sample = (SAMPLES / "SYNTHETIC-history-b7e1d2c3.jsonl").read_bytes()
    assert s3_server.get(s3_bucket, key(SAMPLE_ID)) == expected_sample
    head = s3_server.head(s3_bucket, key(empty["id"]))
    assert head["ContentLength"] == 0
    assert head["ContentType"] == "application/octet-stream"
    assert sink.status().uploaded == 5


def test_a_burst_of_saves_becomes_few_uploads_of_the_last_state(
    sink: HistorySink, sessions: Sessions, s3_server: S3Server, s3_bucket: str, sink_log: Any
) -> None:
    session = new_turns(1)

    def burst(saves: int) -> None:
        for _ in range(saves):
            text = f"n{len(session['messages'])}"
            session["messages"].append(
                {"role": "user", "content": [{"type": "text", "text": text}]}
            )
            sessions.save(session)
            sink.notify(session["id"])

    def current() -> bool:
        try:
            return s3_server.get(s3_bucket, key(session["id"])) == sessions.expected(session["id"])
        except ClientError:
            return False

    def idle() -> bool:
        status = sink.status()
        return status.pending == 0 and status.in_flight == 0

    burst(50)  # left to the debounce: the object catches up on its own
    wait_for(lambda: idle() and current(), 30, "the sink idle and the object current")
    after_first = sink.status().uploaded
    assert 1 <= after_first <= 3, after_first
    burst(50)  # and with a flush straight after
    assert_settled(sink.flush(30))
    assert current()
    uploads = sink.status().uploaded
    assert uploads - after_first <= 3, uploads
    done = sink_log.events("upload_done")
    assert len(done) == uploads and done[-1]["session_id"] == session["id"]
    assert {"bytes", "duration_ms", "attempt"} <= set(done[-1])


def test_a_torn_file_is_never_uploaded(
    sink: HistorySink,
    sessions: Sessions,
    s3_server: S3Server,
    s3_bucket: str,
    sink_log: Any,
    events: list[tuple[str, dict[str, Any]]],
) -> None:
    session = new_turns(2)
    path = sessions.save(session)
    Path(path).write_bytes(Path(path).read_bytes()[:-40])  # a write cut short

    sink.notify(session["id"])
    result = sink.flush(10)

    assert (result.uploaded, result.failed) == (0, 1)
    with pytest.raises(ClientError):
        s3_server.get(s3_bucket, key(session["id"]))
    assert "not a whole session" in str(sink.status().last_error)
    failures = [fields for name, fields in events if name == "upload_failed"]
    assert failures[-1]["retry_in_s"] is None  # no retry: only the next save can help
    assert sink_log.events("upload_failed")[0]["kind"] == "unreadable"
    sessions.save(session)  # the next save is whole: it goes up
    sink.notify(session["id"])
    assert_settled(sink.flush(10))
    assert sink.status().uploaded == 1
    assert s3_server.get(s3_bucket, key(session["id"])) == sessions.expected(session["id"])
    assert sink.status().last_error is None


def test_nothing_is_uploaded_twice_for_the_same_content(
    sink: HistorySink, sessions: Sessions, events: list[tuple[str, dict[str, Any]]]
) -> None:
    session = new_turns(2)
    sessions.save(session)
    sink.notify(session["id"])
    sink.flush(10)
    sessions.save(session)  # same bytes again: the agent would elide it, a copy may not
    sink.notify(session["id"])
    sink.flush(10)
    assert sink.status().uploaded == 1 and sink.status().unchanged == 1
    assert [name for name, _ in events] == ["upload_done"]
    assert events[0][1]["session_id"] == session["id"]


@pytest.mark.slow
def test_a_history_over_100_mb_goes_multipart_and_arrives_intact(
    sink: HistorySink, sessions: Sessions, s3_server: S3Server, s3_bucket: str, sink_log: Any
) -> None:
    session = big_session("/w", 105)
    sessions.save(session)
    expected = sessions.expected(session["id"])
    assert len(expected) > 100 * 1024 * 1024

    sink.notify(session["id"])
    assert_settled(sink.flush(90))

    head = s3_server.head(s3_bucket, key(session["id"]))
    parts = math.ceil(len(expected) / sink_config(s3_server, s3_bucket).multipart_chunksize)
    assert head["ETag"].strip('"').endswith(f"-{parts}")  # a multipart upload's ETag
    assert head["ContentLength"] == len(expected)
    body = s3_server.get(s3_bucket, key(session["id"]))
    assert hashlib.sha256(body).digest() == hashlib.sha256(expected).digest()
    done = sink_log.events("upload_done")[-1]
    assert done["multipart"] is True and done["bytes"] == len(expected)


def test_the_store_gets_a_checksum_to_verify(s3_server: S3Server, s3_bucket: str) -> None:
    """moto does not check them, MinIO and AWS do: see that they are on the wire."""
    mib = 1024 * 1024
    config = sink_config(
        s3_server, s3_bucket, multipart_threshold=5 * mib, multipart_chunksize=5 * mib
    )
    client = s3.make_client(config)
    seen: list[tuple[str, dict[str, str]]] = []

    def record(request: Any, event_name: str, **_: Any) -> None:
        headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        seen.append((event_name.split(".")[-1], headers))

    client.meta.events.register("before-send.s3", record)
    small, large = b'{"role":"user"}\n' * 10, b"x" * (12 * mib)
    assert not s3.put_history(client, config, "small", small).multipart
    assert s3.put_history(client, config, "large", large).multipart

    puts = [headers for op, headers in seen if op == "PutObject"]
    assert [h.get("Content-MD5") for h in puts] == [s3.content_md5(small)]
    assert puts[0]["Content-Type"] == "application/octet-stream"
    parts = [headers for op, headers in seen if op == "UploadPart"]
    assert len(parts) == 3 and all("x-amz-checksum-crc32" in h for h in parts)
    assert s3_server.get(s3_bucket, "large") == large
