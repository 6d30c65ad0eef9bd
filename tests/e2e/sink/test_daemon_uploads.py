"""The history sink inside the real daemon: saves become S3 objects (moto over HTTP), coalesced,
surviving outages and crashes, with `flush` as the barrier and `watch` reporting uploads."""

from __future__ import annotations

import json
import os
import random
import uuid
from typing import Any

from tests.support.agent_sim import AgentSim, add_turn, expected_history, new_session
from tests.support.daemon import DaemonFactory, DaemonProcess
from tests.support.s3server import S3Server


def _object(server: S3Server, bucket: str, session_id: str) -> bytes:
    return server.get(bucket, f"hist/{session_id}/history.jsonl")


class Workspace:
    def __init__(self, base: str) -> None:
        self.sim = AgentSim(os.path.join(base, "global"), write_pointer=False)
        self.sessions_dir = os.path.join(base, "proj", ".codetether-agent", "sessions")
        os.makedirs(self.sessions_dir)

    def session(self, turns: int, seed: int) -> dict[str, Any]:
        session = new_session(os.path.dirname(os.path.dirname(self.sessions_dir)))
        rng = random.Random(seed)
        for _ in range(turns):
            add_turn(session, rng, 120)
        return session

    def save(self, session: dict[str, Any]) -> None:
        self.sim.save(self.sessions_dir, session)


def _daemon(daemons: DaemonFactory, ws: Workspace, env: dict[str, str]) -> DaemonProcess:
    # One name: each daemon of a test shares the state folder (and the upload ledger).
    return daemons(sessions_dirs=[ws.sessions_dir], discover=False, env=env, name="uploader")


def test_saves_become_objects_byte_for_byte(
    daemons: DaemonFactory, base: str, s3_server: S3Server, s3_bucket: str
) -> None:
    ws = Workspace(base)
    daemon = _daemon(daemons, ws, s3_server.history_env(s3_bucket)).start()
    client = daemon.client()
    events = daemon.client().watch()
    sessions = [ws.session(3, 1), ws.session(0, 2)]
    sessions[0]["messages"][0]["content"][0]["text"] = 'ctl \x01\x1f tab\t é ✓ "q" \\ /'
    for session in sessions:
        ws.save(session)
    result = client.flush(timeout=30)
    assert result["failed"] == 0
    for session in sessions:
        assert _object(s3_server, s3_bucket, session["id"]) == expected_history(session)
    assert _object(s3_server, s3_bucket, sessions[1]["id"]) == b""
    uploaded = set()
    for event in events:
        if event.get("event") == "upload_done":
            uploaded.add(event["session_id"])
        if uploaded == {s["id"] for s in sessions}:
            break
    status = client.status()["uploads"]
    assert status["enabled"] and status["failed"] == 0 and status["uploaded"] >= 2
    assert s3_server.secret_key not in daemon.log_text()
    assert s3_server.secret_key not in json.dumps(client.status())


def test_a_burst_of_saves_is_coalesced(
    daemons: DaemonFactory, base: str, s3_server: S3Server, s3_bucket: str
) -> None:
    ws = Workspace(base)
    daemon = _daemon(daemons, ws, s3_server.history_env(s3_bucket)).start()
    client = daemon.client()
    session = ws.session(1, 3)
    rng = random.Random(4)
    for _ in range(50):
        add_turn(session, rng, 40)
        ws.save(session)
    client.flush(timeout=30)
    assert _object(s3_server, s3_bucket, session["id"]) == expected_history(session)
    uploads = client.status()["uploads"]["uploaded"]
    assert 1 <= uploads <= 10, uploads


def test_nothing_is_lost_to_a_crash_and_nothing_resent_after_a_clean_restart(
    daemons: DaemonFactory, base: str, s3_server: S3Server, s3_bucket: str
) -> None:
    ws = Workspace(base)
    env = s3_server.history_env(s3_bucket)
    first = _daemon(daemons, ws, env).start()
    sessions = [ws.session(2, seed) for seed in range(5)]
    for session in sessions:
        ws.save(session)
    first.kill()  # SIGKILL right after the saves: uploads may not even have started
    second = _daemon(daemons, ws, env).start()
    assert second.client().flush(timeout=30)["failed"] == 0
    for session in sessions:
        assert _object(s3_server, s3_bucket, session["id"]) == expected_history(session)
    assert second.stop() == 0
    third = _daemon(daemons, ws, env).start()
    client = third.client()
    client.flush(timeout=30)
    assert client.status()["uploads"]["uploaded"] == 0


def test_an_outage_delays_uploads_but_loses_none(
    daemons: DaemonFactory, base: str, fresh_s3_server: S3Server
) -> None:
    bucket = f"hist-{uuid.uuid4().hex[:12]}"
    fresh_s3_server.create_bucket(bucket)
    ws = Workspace(base)
    daemon = _daemon(daemons, ws, fresh_s3_server.history_env(bucket))
    # The restarted server answers a moment before its bucket is re-created: a retry landing
    # then fails with "no such bucket" (error level) and is retried.
    daemon.allowed_errors |= {"upload_failed"}
    client = daemon.start().client()
    fresh_s3_server.stop()
    sessions = [ws.session(2, seed) for seed in range(10, 15)]
    for session in sessions:
        ws.save(session)
    client.sync()
    assert client.resume(ws.sessions_dir.rsplit("/.codetether-agent", 1)[0])["session_id"]
    fresh_s3_server.start()  # the server comes back with the bucket, empty
    assert client.flush(timeout=60)["failed"] == 0
    for session in sessions:
        assert _object(fresh_s3_server, bucket, session["id"]) == expected_history(session)


def test_wrong_credentials_are_reported_and_the_daemon_keeps_serving(
    daemons: DaemonFactory, base: str, s3_server: S3Server, s3_bucket: str
) -> None:
    ws = Workspace(base)
    secret = "not-the-secret-" + uuid.uuid4().hex
    env = {
        **s3_server.history_env("no-such-bucket-" + uuid.uuid4().hex[:8]),
        "CODETETHER_HISTORY_S3_SECRET_KEY": secret,
    }
    daemon = _daemon(daemons, ws, env)
    daemon.allowed_errors |= {"upload_failed"}
    daemon.start()
    client = daemon.client()
    session = ws.session(1, 9)
    ws.save(session)
    client.sync()
    assert client.resume(session["metadata"]["directory"])["session_id"] == session["id"]
    client.flush(timeout=15)
    status = client.status()
    error = status["uploads"]["last_error"]
    assert error and "bucket" in error.lower()
    assert secret not in json.dumps(status)
    assert secret not in daemon.log_text()
