"""Wrong credentials and a missing bucket: one clear message, and the secret nowhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sessiond.sink.config import SinkConfig
from sessiond.sink.reports import FlushResult
from sessiond.sink.uploader import HistorySink

from tests.support.s3server import LogLines, S3Server, Sessions, new_turns, sink_config

WRONG_SECRET = "wrong-secret-Zq7-must-never-appear"


def run_failing(
    config: SinkConfig, tmp_path: Path, sessions_count: int = 3
) -> tuple[HistorySink, FlushResult, list[tuple[str, dict[str, Any]]]]:
    """Save and notify a few sessions against `config`; flush; return sink, result, events."""
    sessions = Sessions(str(tmp_path))
    events: list[tuple[str, dict[str, Any]]] = []
    sink = HistorySink(
        config,
        sessions.locate,
        str(tmp_path / "state"),
        lambda r: events.append((str(r.event), r.fields())),
    )
    sink.start([])
    for seed in range(sessions_count):
        session = new_turns(1, seed=seed)
        sessions.save(session)
        sink.notify(session["id"])
    return sink, sink.flush(30), events


def assert_secret_nowhere(secret: str, *places: object) -> None:
    for place in places:
        text = place if isinstance(place, str) else json.dumps(place, default=str)
        assert secret not in text


@pytest.fixture
def auth_server(fresh_s3_server: S3Server) -> S3Server:
    fresh_s3_server.create_bucket("history")
    fresh_s3_server.enable_auth()
    return fresh_s3_server


@pytest.mark.parametrize("wrong", ["secret", "access_key"])
def test_wrong_credentials_give_one_clear_message(
    auth_server: S3Server, tmp_path: Path, sink_log: LogLines, wrong: str
) -> None:
    good = sink_config(auth_server, "history")
    assert HistorySink(good, lambda _: None, str(tmp_path / "ok")).check() == []
    if wrong == "secret":
        config = sink_config(auth_server, "history", secret_key=WRONG_SECRET)
        fix = "CODETETHER_HISTORY_S3_SECRET_KEY"
    else:
        config = sink_config(
            auth_server, "history", access_key="AKIANOSUCHKEY", secret_key=WRONG_SECRET
        )
        fix = "does not know access key"

    sink, result, events = run_failing(config, tmp_path)
    try:
        assert (result.uploaded, result.failed, result.pending) == (0, 3, 0)
        status = sink.status()
        assert status.last_error is not None and fix in status.last_error
        assert status.uploaded == 0
        failures = sink_log.events("upload_failed")
        assert len(failures) == 1  # one line however many sessions fail the same way
        assert failures[0]["kind"] == "credentials" and fix in failures[0]["error"]
        # Every session failed at least once (one may have failed again for the flush).
        assert {name for name, _ in events} == {"upload_failed"}
        assert len({fields["session_id"] for _, fields in events}) == 3
        problems = sink.check()
        assert len(problems) == 1 and fix in problems[0]
    finally:
        sink.stop(2)
    assert_secret_nowhere(
        WRONG_SECRET, status.fields(), result.fields(), events, problems, "\n".join(sink_log.lines)
    )
    assert_secret_nowhere(WRONG_SECRET, repr(config), str(config))


def test_a_missing_bucket_says_create_it(
    s3_server: S3Server, tmp_path: Path, sink_log: LogLines
) -> None:
    config = sink_config(s3_server, "no-such-bucket-here", secret_key=WRONG_SECRET)
    sink, result, events = run_failing(config, tmp_path)
    try:
        assert (result.failed, result.pending) == (3, 0)
        status = sink.status()
        assert status.last_error is not None
        assert "'no-such-bucket-here' does not exist" in status.last_error
        assert "create it" in status.last_error
        assert len(sink_log.events("upload_failed")) == 1
        problems = sink.check()
        assert len(problems) == 1 and "does not exist" in problems[0]
    finally:
        sink.stop(2)
    assert_secret_nowhere(
        WRONG_SECRET, status.fields(), result.fields(), events, problems, "\n".join(sink_log.lines)
    )


def test_an_unreachable_endpoint_is_reported_by_check(tmp_path: Path) -> None:
    config = SinkConfig(
        endpoint="http://127.0.0.1:9",  # discard port: nothing listens
        bucket="history",
        access_key="minioadmin",
        secret_key=WRONG_SECRET,
    )
    problems = HistorySink(config, lambda _: None, str(tmp_path)).check()
    assert len(problems) == 1 and "cannot reach the S3 endpoint http://127.0.0.1:9" in problems[0]
    assert_secret_nowhere(WRONG_SECRET, problems)
