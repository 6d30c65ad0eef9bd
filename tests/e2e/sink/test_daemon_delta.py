"""Delta uploads through the real daemon: a history that only grew costs its new bytes, the
object stays one history.jsonl byte for byte, and whatever goes wrong in the middle (an edit,
another writer, an outage, a crash) ends in a correct object and no multipart upload left open.

The daemon reaches moto (over HTTP on 127.0.0.1) through a recording proxy that counts the
bytes it sends and can be stopped between two parts; the tests read the objects from moto
directly. SESSIOND_TEST_FAULTS=sink_pause_after_* (sink/faults.py) holds a delta at a point
until the test releases it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_sim import (
    BIG_TEXT,
    AgentSim,
    big_session,
    compact,
    expected_history,
    new_session,
)
from tests.support.daemon import DaemonFactory, DaemonProcess, wait_for
from tests.support.s3proxy import RecordingProxy
from tests.support.s3server import S3Server

MIB = 1 << 20
# What one delta upload may cost on the wire beyond the new bytes: HEAD, create, copy part,
# upload part, complete, HEAD, each a signed HTTP request (measured ~5.6 KiB in all).
DELTA_OVERHEAD = 16 * 1024


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[RecordingProxy]:
    with RecordingProxy(s3_server.port) as running:
        yield running


class Store:
    """The bucket as the test sees it (moto directly, not through the proxy)."""

    def __init__(self, server: S3Server, bucket: str) -> None:
        self.server, self.bucket = server, bucket
        self.client = server.client()

    def key(self, session_id: str) -> str:
        return f"hist/{session_id}/history.jsonl"

    def get(self, session_id: str) -> bytes:
        return self.server.get(self.bucket, self.key(session_id))

    def put(self, session_id: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(session_id), Body=body)

    def open_uploads(self) -> list[dict[str, Any]]:
        return list(self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []))


class Workspace:
    def __init__(self, base: str) -> None:
        self.sim = AgentSim(os.path.join(base, "global"), write_pointer=False)
        self.dir = os.path.join(base, "proj")
        self.sessions_dir = os.path.join(self.dir, ".codetether-agent", "sessions")
        os.makedirs(self.sessions_dir)

    def save(self, session: dict[str, Any]) -> None:
        self.sim.save(self.sessions_dir, session)


def append(session: dict[str, Any], number: int) -> int:
    """One new message; returns the bytes it adds to the history."""
    message = {"role": "user", "content": [{"type": "text", "text": f"message {number} ✓"}]}
    session["messages"].append(message)
    return len(compact(message)) + 1


def write_config(base: str) -> None:
    """Quick retries, so an outage's retries land within the test's flush."""
    folder = os.path.join(base, "xdg-config", "sessiond")
    os.makedirs(folder, exist_ok=True)
    Path(folder, "config.toml").write_text(
        "[s3]\nmax_attempts = 2\nbackoff_base_s = 0.1\nbackoff_max_s = 1.0\n"
        "connect_timeout_s = 2.0\n"
    )


def daemon_for(
    daemons: DaemonFactory,
    base: str,
    ws: Workspace,
    store: Store,
    proxy: RecordingProxy,
    faults: str = "",
) -> DaemonProcess:
    """A daemon uploading to the store's bucket through the proxy."""
    write_config(base)
    env = store.server.history_env(store.bucket, endpoint=proxy.endpoint)
    if faults:
        env["SESSIOND_TEST_FAULTS"] = faults
    # One name: every daemon of a test shares the state folder (and the upload ledger).
    return daemons(sessions_dirs=[ws.sessions_dir], discover=False, env=env, name="delta")


def uploads(daemon: DaemonProcess) -> dict[str, Any]:
    return dict(daemon.client().status()["uploads"])


def settled(daemon: DaemonProcess, timeout: float = 60) -> dict[str, Any]:
    result = dict(daemon.client(timeout=timeout + 5).flush(timeout=timeout))
    assert result["failed"] == 0, (result, uploads(daemon))
    return result


def done_events(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return daemon.events_named("upload_done")


def paused(daemon: DaemonProcess) -> bool:
    return bool(daemon.events_named("test_fault"))


def release(daemon: DaemonProcess) -> None:
    Path(daemon.state_dir, "sink-pause.release").touch()


def grown(daemon: DaemonProcess, ws: Workspace) -> dict[str, Any]:
    """A 6 MiB session saved and uploaded whole, then one message appended and saved: the
    upload it sets off is the delta the test is about."""
    session = big_session(ws.dir, 6)
    ws.save(session)
    settled(daemon)
    append(session, 1)
    ws.save(session)
    return session


@pytest.mark.slow
def test_fifty_appends_to_a_20_mib_history_send_only_their_bytes(
    daemons: DaemonFactory, base: str, s3_server: S3Server, s3_bucket: str, proxy: RecordingProxy
) -> None:
    store, ws = Store(s3_server, s3_bucket), Workspace(base)
    daemon = daemon_for(daemons, base, ws, store, proxy).start()
    session = big_session(ws.dir, 20)
    ws.save(session)
    settled(daemon)
    assert store.get(session["id"]) == expected_history(session)
    first = uploads(daemon)
    assert (first["whole_uploads"], first["delta_uploads"]) == (1, 0)

    appended, sent_before = 0, proxy.sent
    for number in range(50):
        appended += append(session, number)
        ws.save(session)
        settled(daemon)
        assert store.get(session["id"]) == expected_history(session), f"after append {number}"
    on_wire = proxy.sent - sent_before

    assert on_wire <= appended + 50 * DELTA_OVERHEAD, (on_wire, appended)
    after = uploads(daemon)
    assert (after["whole_uploads"], after["delta_uploads"], after["delta_fallbacks"]) == (1, 50, 0)
    assert after["bytes_sent"] - first["bytes_sent"] == appended
    assert store.open_uploads() == []
    deltas = [e for e in done_events(daemon) if e["delta"]]
    assert len(deltas) == 50 and all(e["multipart"] and e["sent_bytes"] < 100 for e in deltas)


def test_an_edited_message_is_uploaded_whole(
    daemons: DaemonFactory, base: str, s3_server: S3Server, s3_bucket: str, proxy: RecordingProxy
) -> None:
    store, ws = Store(s3_server, s3_bucket), Workspace(base)
    daemon = daemon_for(daemons, base, ws, store, proxy).start()
    session = grown(daemon, ws)
    settled(daemon)
    session["messages"][3]["content"][0]["text"] = BIG_TEXT.replace("x", "y", 1)  # same size
    append(session, 2)  # longer than before, but no longer an extension
    ws.save(session)
    settled(daemon)

    assert store.get(session["id"]) == expected_history(session)
    status = uploads(daemon)
    assert (status["whole_uploads"], status["delta_uploads"]) == (2, 1)
    assert status["delta_fallbacks"] == 0  # no delta was even tried: the prefix differs
    assert [e["delta"] for e in done_events(daemon)] == [False, True, False]
    assert store.open_uploads() == []


def test_an_object_replaced_by_another_writer_is_uploaded_whole(
    daemons: DaemonFactory, base: str, s3_server: S3Server, s3_bucket: str, proxy: RecordingProxy
) -> None:
    store, ws = Store(s3_server, s3_bucket), Workspace(base)
    daemon = daemon_for(daemons, base, ws, store, proxy).start()
    session = big_session(ws.dir, 6)
    ws.save(session)
    settled(daemon)
    store.put(session["id"], b"another writer's history\n" * 300_000)  # as large, other bytes
    append(session, 1)
    ws.save(session)
    settled(daemon)

    assert store.get(session["id"]) == expected_history(session)
    status = uploads(daemon)
    assert (status["whole_uploads"], status["delta_uploads"], status["delta_fallbacks"]) == (
        2,
        0,
        1,
    )
    (fallback,) = daemon.events_named("delta_fallback")
    assert "replaced" in fallback["reason"]
    assert store.open_uploads() == []


def test_a_replacement_between_the_check_and_the_copy_is_caught(
    daemons: DaemonFactory, base: str, s3_server: S3Server, s3_bucket: str, proxy: RecordingProxy
) -> None:
    """The object changes after sessiond's HEAD: CopySourceIfMatch should refuse the copy; moto
    ignores the condition, so the copied part's ETag is what tells (either way: whole)."""
    store, ws = Store(s3_server, s3_bucket), Workspace(base)
    daemon = daemon_for(daemons, base, ws, store, proxy, faults="sink_pause_after_head").start()
    session = grown(daemon, ws)
    wait_for(lambda: paused(daemon), 30, "the delta paused after its HEAD")
    store.put(session["id"], b"another writer's history\n" * 300_000)
    release(daemon)
    settled(daemon)

    assert store.get(session["id"]) == expected_history(session)
    (fallback,) = daemon.events_named("delta_fallback")
    assert "copied other bytes" in fallback["reason"] or "PreconditionFailed" in fallback["reason"]
    assert [e["delta"] for e in done_events(daemon)] == [False, False]
    assert store.open_uploads() == []


def test_an_outage_between_two_parts_leaves_no_upload_open(
    daemons: DaemonFactory, base: str, s3_server: S3Server, s3_bucket: str, proxy: RecordingProxy
) -> None:
    store, ws = Store(s3_server, s3_bucket), Workspace(base)
    daemon = daemon_for(daemons, base, ws, store, proxy, faults="sink_pause_after_copy").start()
    session = grown(daemon, ws)
    wait_for(lambda: paused(daemon), 30, "the delta paused after its copy part")
    proxy.stop()  # the store goes away between the copied part and the new bytes
    release(daemon)
    wait_for(lambda: uploads(daemon)["failed"] >= 1, 60, "the delta failed")
    assert len(store.open_uploads()) == 1  # the abort could not reach the store either

    proxy.start()
    settled(daemon)

    assert store.get(session["id"]) == expected_history(session)
    assert store.open_uploads() == []
    status = uploads(daemon)
    assert (status["whole_uploads"], status["delta_uploads"]) == (1, 1)  # retried as a delta
    assert daemon.events_named("upload_aborted")


def test_a_crash_between_two_parts_leaves_no_upload_open(
    daemons: DaemonFactory, base: str, s3_server: S3Server, s3_bucket: str, proxy: RecordingProxy
) -> None:
    store, ws = Store(s3_server, s3_bucket), Workspace(base)
    first = daemon_for(daemons, base, ws, store, proxy, faults="sink_pause_after_copy").start()
    session = grown(first, ws)
    wait_for(lambda: paused(first), 30, "the delta paused after its copy part")
    first.kill()  # SIGKILL between the parts
    assert len(store.open_uploads()) == 1

    second = daemon_for(daemons, base, ws, store, proxy).start()
    settled(second)

    assert store.get(session["id"]) == expected_history(session)
    assert store.open_uploads() == []
    assert second.events_named("upload_aborted")
    assert uploads(second)["delta_uploads"] == 1  # the ledger still knew the old object


def test_a_history_crossing_5_mib_goes_delta_from_then_on(
    daemons: DaemonFactory, base: str, s3_server: S3Server, s3_bucket: str, proxy: RecordingProxy
) -> None:
    store, ws = Store(s3_server, s3_bucket), Workspace(base)
    daemon = daemon_for(daemons, base, ws, store, proxy).start()
    session = big_session(ws.dir, 4)
    ws.save(session)
    settled(daemon)
    append(session, 1)  # the object is under 5 MiB: a copy part would be too small
    ws.save(session)
    settled(daemon)
    session["messages"].append({"role": "user", "content": [{"type": "text", "text": BIG_TEXT}]})
    session["messages"].append({"role": "user", "content": [{"type": "text", "text": BIG_TEXT}]})
    ws.save(session)  # now over 5 MiB, uploaded whole: the object it extends was smaller
    settled(daemon)
    assert len(expected_history(session)) > 5 * MIB
    append(session, 2)
    ws.save(session)
    settled(daemon)

    assert store.get(session["id"]) == expected_history(session)
    assert [e["delta"] for e in done_events(daemon)] == [False, False, False, True]
    assert store.open_uploads() == []


# --- the ledger checked against the store --------------------------------------------------


def test_objects_replaced_while_the_daemon_was_down_are_uploaded_again(
    daemons: DaemonFactory, base: str, s3_server: S3Server, s3_bucket: str, proxy: RecordingProxy
) -> None:
    store, ws = Store(s3_server, s3_bucket), Workspace(base)
    first = daemon_for(daemons, base, ws, store, proxy).start()
    sessions = [new_session(ws.dir) for _ in range(4)]
    for number, session in enumerate(sessions):
        append(session, number)
        ws.save(session)
    settled(first)
    assert first.stop() == 0
    store.put(sessions[0]["id"], b"the agent's own upload, different\n")  # other bytes
    store.put(sessions[1]["id"], expected_history(sessions[1]).upper())  # same size, other bytes
    store.client.delete_object(Bucket=s3_bucket, Key=store.key(sessions[2]["id"]))

    second = daemon_for(daemons, base, ws, store, proxy).start()
    settled(second)  # the very first flush already covers the check

    for session in sessions:
        assert store.get(session["id"]) == expected_history(session)
    status = uploads(second)
    assert (status["replaced"], status["uploaded"], status["unverified"]) == (3, 3, 0)
    replaced = {e["session_id"] for e in second.events_named("object_replaced")}
    assert replaced == {s["id"] for s in sessions[:3]}


def test_a_store_down_at_start_is_not_reported_as_all_uploaded(
    daemons: DaemonFactory, base: str, s3_server: S3Server, s3_bucket: str, proxy: RecordingProxy
) -> None:
    store, ws = Store(s3_server, s3_bucket), Workspace(base)
    first = daemon_for(daemons, base, ws, store, proxy).start()
    session = new_session(ws.dir)
    append(session, 1)
    ws.save(session)
    settled(first)
    assert first.stop() == 0
    store.put(session["id"], b"replaced\n")
    proxy.stop()

    second = daemon_for(daemons, base, ws, store, proxy).start()
    result = second.client(timeout=60).flush(timeout=30)
    assert result["failed"] == 1  # could not check the object: not "all uploaded"
    assert uploads(second)["unverified"] == 1

    proxy.start()  # the check is tried again after a backoff, and finds the replacement
    wait_for(lambda: uploads(second)["replaced"] == 1, 60, "the replacement was found")
    settled(second)
    assert store.get(session["id"]) == expected_history(session)
    assert uploads(second)["unverified"] == 0
