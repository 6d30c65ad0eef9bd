"""The history sink's parts without a server: config, body bytes, ledger, schedule, errors."""

from __future__ import annotations

import dataclasses
import json
import os
import random
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from sessionctl.protocol import Event
from sessiond.config import ConfigError, s3_settings
from sessiond.sink.config import SinkConfig
from sessiond.sink.errors import FailureKind, Pass, RateLimiter, classify
from sessiond.sink.faults import NO_FAULTS, Faults, Point
from sessiond.sink.history import UnreadableSession, history_body, read_history
from sessiond.sink.ledger import Ledger, LedgerEntry
from sessiond.sink.reports import FlushResult, SinkState, SinkStatus, UploadDone, UploadFailed
from sessiond.sink.schedule import Counts, Due, Result, Schedule

from tests.support.agent_sim import AgentSim, add_turn, expected_history, new_session
from tests.support.paths import DATA

SAMPLES = DATA
SECRET = "s3cr3t-KEY-never-shown"
ENV = {
    "CODETETHER_HISTORY_S3_ENDPOINT": "http://127.0.0.1:9000",
    "CODETETHER_HISTORY_S3_BUCKET": "codetether-history",
    "CODETETHER_HISTORY_S3_ACCESS_KEY": "minioadmin",
    "CODETETHER_HISTORY_S3_SECRET_KEY": SECRET,
}


# --- config ---------------------------------------------------------------------------------


def test_config_needs_all_four_variables() -> None:
    assert SinkConfig.from_env({}) is None
    for name in ENV:
        assert SinkConfig.from_env({**ENV, name: "  "}) is None
        assert SinkConfig.from_env({k: v for k, v in ENV.items() if k != name}) is None
    config = SinkConfig.from_env(ENV)
    assert config is not None
    assert (config.prefix, config.addressing_style, config.region) == (
        "history/",
        "path",
        "us-east-1",
    )


@pytest.mark.parametrize(
    ("raw", "prefix"), [("", "history/"), (" ", "history/"), ("a", "a/"), ("a/b/", "a/b/")]
)
def test_config_prefix_rules(raw: str, prefix: str) -> None:
    config = SinkConfig.from_env({**ENV, "CODETETHER_HISTORY_S3_PREFIX": raw})
    assert config is not None and config.prefix == prefix
    assert config.object_key("abc") == f"{prefix}abc/history.jsonl"


def test_config_settings_and_no_secret_in_repr() -> None:
    config = SinkConfig.from_env(
        {**ENV, "CODETETHER_HISTORY_S3_ENDPOINT": "http://user:pw@minio:9000"},
        s3_settings(
            {
                "region": "eu-west-1",
                "debounce_s": 1,
                "concurrency": 2,
                "addressing_style": "virtual",
            }
        ),
    )
    assert config is not None
    assert (config.region, config.debounce_s, config.concurrency) == ("eu-west-1", 1.0, 2)
    for text in (repr(config), str(config), config.endpoint_display):
        assert SECRET not in text and "pw" not in text
    with pytest.raises(ConfigError, match=r"s3\.debounce_s"):
        s3_settings({"debounce_s": "soon"})
    with pytest.raises(ConfigError, match=r"unknown key s3\.debounse_s"):
        s3_settings({"debounse_s": 1.0})
    with pytest.raises(ConfigError, match=r"s3\.addressing_style"):
        s3_settings({"addressing_style": "sideways"})
    bare = SinkConfig.from_env({**ENV, "CODETETHER_HISTORY_S3_ENDPOINT": "minio.local:9000"})
    assert bare is not None and bare.endpoint == "https://minio.local:9000"


# --- the object's bytes ---------------------------------------------------------------------


def test_body_of_the_sample_is_the_expected_history() -> None:
    data = (SAMPLES / "SYNTHETIC-session-b7e1d2c3.json").read_bytes()
    body, reencoded, count = history_body(data)
    assert body == (SAMPLES / "SYNTHETIC-history-b7e1d2c3.jsonl").read_bytes()
    assert (reencoded, count) == (False, 4)


def test_body_slices_compact_and_reencodes_pretty(tmp_path: Path) -> None:
    sim = AgentSim(str(tmp_path / "global"))
    session = new_session("/home/dev/ünïcødé", title="✓")
    session["messages"].append(
        {
            "role": "user",
            "content": [{"type": "text", "text": 'ctl \x00\x01\x1f\x7f \u2028 / \\ " é 😀'}],
        }
    )
    add_turn(session, random.Random(1))
    compact_path = sim.save(str(tmp_path / "a"), session)
    pretty_path = sim.import_codex(str(tmp_path / "b"), session)
    assert b"\n" in Path(pretty_path).read_bytes()
    sliced, pretty = read_history(compact_path), read_history(pretty_path)
    assert sliced.body == pretty.body == expected_history(session)
    assert (sliced.reencoded, pretty.reencoded) == (False, True)
    assert sliced.fingerprint == pretty.fingerprint


def test_zero_messages_is_an_empty_body(tmp_path: Path) -> None:
    path = AgentSim(str(tmp_path / "g")).save(str(tmp_path / "s"), new_session(None))
    assert read_history(path).body == b""


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b'{"id":"x","messages":[{"role":"user"',
        b"garbage",
        b'{"id":"x","messages":{}}',
        b'{"id":"x","messages":[1]}',
        b'{"messages":[]}',
    ],
)
def test_torn_or_foreign_files_are_unreadable(data: bytes) -> None:
    with pytest.raises(UnreadableSession):
        history_body(data)


# --- ledger ---------------------------------------------------------------------------------


def test_ledger_round_trip_and_rebuild(tmp_path: Path) -> None:
    entry = LedgerEntry("ab" * 16, 10, 1, 2, 3, 4.0)
    ledger = Ledger(str(tmp_path), "t1")
    ledger.record("s1", entry)
    assert ledger.persist() and not ledger.persist()  # written once, then nothing to write
    again = Ledger(str(tmp_path), "t1")
    again.load()
    assert again.get("s1") == entry
    foreign = Ledger(str(tmp_path), "another-bucket")
    foreign.load()
    assert foreign.get("s1") is None and foreign.dirty
    Path(ledger.path).write_bytes(b'{"format":"sessiond-upload-ledger","ver')
    corrupt = Ledger(str(tmp_path), "t1")
    corrupt.load()
    assert corrupt.get("s1") is None
    corrupt.persist()
    assert json.loads(Path(ledger.path).read_bytes())["entries"] == {}
    assert [n for n in os.listdir(tmp_path) if ".tmp" in n] == []


# --- schedule -------------------------------------------------------------------------------


def schedule() -> Schedule:
    return Schedule(
        debounce_s=0.25, max_delay_s=2.0, backoff_base_s=0.5, backoff_max_s=60.0, rng=lambda: 1.0
    )


def test_debounce_then_max_delay() -> None:
    s = schedule()
    for step in range(20):  # a save every 0.1 s keeps pushing the debounce...
        s.change("a", step * 0.1)
    sid, wait = s.next_due(1.9)
    assert sid == "a" and wait == pytest.approx(0.1)  # ...but not past first change + 2 s
    s2 = schedule()
    s2.change("a", 0.0)
    s2.change("a", 0.1)
    assert s2.next_due(0.0)[1] == pytest.approx(0.35)


def test_change_during_attempt_gives_exactly_one_more() -> None:
    s = schedule()
    s.change("a", 0.0)
    attempt = s.begin("a")
    s.change("a", 0.1)
    s.change("a", 0.2)
    assert s.next_due(0.3) == (None, float("inf"))  # one in flight at most
    s.succeed(attempt, Result.UPLOADED, 0.5)
    sid, _ = s.next_due(0.5)
    second = s.begin("a")
    assert sid == "a" and second.seq == s.seq
    s.succeed(second, Result.UPLOADED, 1.0)
    assert s.next_due(1.0) == Due(None, float("inf")) and s.counts().pending == 0


def test_backoff_is_capped_exponential_and_flush_kick_retries_now() -> None:
    s = schedule()
    assert [s.backoff(n) for n in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, 60.0]
    s.change("a", 0.0, immediate=True)
    attempt = s.begin("a")
    assert s.fail(attempt, 1.0, retry=True) == 0.5
    assert s.counts() == Counts(pending=1, in_flight=0, retrying=1)
    snapshot = s.snapshot()
    epoch = s.kick(1.1)
    assert s.next_due(1.1)[1] <= 0
    retry = s.begin("a")
    assert s.progress(snapshot, epoch).pending == 1
    s.fail(retry, 1.2, retry=True)
    assert s.progress(snapshot, epoch).failed == 1  # failed for this flush, still retried later
    assert s.counts().retrying == 1


# --- errors ---------------------------------------------------------------------------------


def client_error(code: str, status: int) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": SECRET},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "PutObject")  # type: ignore[arg-type]


def test_errors_say_what_to_fix_and_hold_no_secret() -> None:
    config = SinkConfig.from_env(ENV)
    assert config is not None
    cases = {
        FailureKind.CREDENTIALS: [
            client_error("InvalidAccessKeyId", 403),
            client_error("SignatureDoesNotMatch", 403),
        ],
        FailureKind.BUCKET: [client_error("NoSuchBucket", 404)],
        FailureKind.UNREACHABLE: [EndpointConnectionError(endpoint_url=config.endpoint)],
    }
    for kind, errors in cases.items():
        for exc in errors:
            error = classify(exc, config)
            assert error.kind is kind and SECRET not in error.message
            assert error.setup == (kind is not FailureKind.UNREACHABLE)
    credentials = cases[FailureKind.CREDENTIALS][1]
    assert "CODETETHER_HISTORY_S3_SECRET_KEY" in classify(credentials, config).message
    assert "create it" in classify(cases[FailureKind.BUCKET][0], config).message


def test_rate_limiter_lets_first_through_then_one_per_interval() -> None:
    limiter = RateLimiter(interval_s=30.0, setup_interval_s=600.0)
    held = Pass(let_through=False, held_back=0)
    assert limiter.allow(FailureKind.UNREACHABLE, 0.0) == Pass(let_through=True, held_back=0)
    assert limiter.allow(FailureKind.UNREACHABLE, 1.0) == held
    assert limiter.allow(FailureKind.UNREACHABLE, 2.0) == held
    assert limiter.allow(FailureKind.UNREACHABLE, 31.0) == Pass(let_through=True, held_back=2)
    assert limiter.allow(FailureKind.CREDENTIALS, 0.0) == Pass(let_through=True, held_back=0)
    assert limiter.allow(FailureKind.CREDENTIALS, 100.0) == held  # a setup kind: 600 s
    assert limiter.allow("ledger", 0.0).let_through  # a topic that is not a failure kind
    assert limiter.allow("ledger", 31.0) == Pass(let_through=True, held_back=0)


def test_rate_limiter_reset_makes_the_next_failure_news_and_forgets_the_held() -> None:
    limiter = RateLimiter(interval_s=30.0, setup_interval_s=600.0)
    assert limiter.allow(FailureKind.TIMEOUT, 0.0).let_through
    assert not limiter.allow(FailureKind.TIMEOUT, 1.0).let_through
    limiter.reset()
    assert limiter.allow(FailureKind.TIMEOUT, 2.0) == Pass(let_through=True, held_back=0)


def test_setup_kinds_are_those_only_a_change_of_setup_fixes() -> None:
    setup = {kind for kind in FailureKind if kind.setup}
    assert {str(kind) for kind in setup} == {
        "credentials",
        "bucket",
        "denied",
        "region",
        "clock",
        "endpoint",
    }


# --- reports and faults ---------------------------------------------------------------------


def test_upload_reports_give_the_watch_events_fields() -> None:
    """docs/protocol.md, "watch": the fields of `upload_done` and `upload_failed`, in order."""
    done = UploadDone("s1", bytes=10, duration_ms=3, attempt=2)
    assert done.event is Event.UPLOAD_DONE
    assert json.dumps(done.fields()) == (
        '{"session_id": "s1", "bytes": 10, "duration_ms": 3, "attempt": 2}'
    )
    failed = UploadFailed("s1", FailureKind.UNREACHABLE, "down", attempt=1, retry_in_s=None)
    assert failed.event is Event.UPLOAD_FAILED
    assert json.dumps(failed.fields()) == (
        '{"session_id": "s1", "kind": "unreachable", "error": "down", "attempt": 1, '
        '"retry_in_s": null}'
    )


def test_flush_result_names_the_catalog_only_when_one_is_kept() -> None:
    assert FlushResult(1, 0, 0).fields() == {
        "uploaded": 1,
        "failed": 0,
        "pending": 0,
        "timed_out": False,
    }
    late = FlushResult(0, 1, 2, catalog_written=False)
    assert late.timed_out
    assert list(late.fields().items()) == [
        ("catalog_written", False),
        ("uploaded", 0),
        ("failed", 1),
        ("pending", 2),
        ("timed_out", True),
    ]


def test_sink_status_fields_are_the_wire_members_in_order() -> None:
    """docs/protocol.md, "status": `uploads` with the sink on; `state` comes last."""
    counters = dict.fromkeys(
        ["pending", "in_flight", "retrying", "uploaded", "failed", "unchanged"], 0
    )
    counters |= dict.fromkeys(
        ["bytes_uploaded", "delta_uploads", "whole_uploads", "bytes_sent", "delta_fallbacks"], 0
    )
    status = SinkStatus(
        **counters,
        replaced=0,
        unverified=0,
        last_error=None,
        last_error_at=None,
        endpoint="http://e",
        bucket="b",
        prefix="p/",
        remote=None,
    )
    fields = status.fields()
    assert list(fields)[:2] == ["enabled", "pending"] and list(fields)[-2:] == ["remote", "state"]
    assert (fields["enabled"], fields["state"]) == (True, "running")
    assert status.state is SinkState.RUNNING
    dead = dataclasses.replace(status, state=SinkState.DEAD, last_error="why")
    assert (dead.fields()["state"], dead.fields()["last_error"]) == ("dead", "why")


def test_faults_arm_only_the_named_points(tmp_path: Path) -> None:
    assert Faults.from_env({}, str(tmp_path)) is NO_FAULTS
    env = {"SESSIOND_TEST_FAULTS": "sink_pause_nowhere, other"}
    assert Faults.from_env(env, str(tmp_path)) is NO_FAULTS
    env = {"SESSIOND_TEST_FAULTS": "sink_pause_after_copy"}
    faults = Faults.from_env(env, str(tmp_path))
    assert faults is not NO_FAULTS
    faults.pause(Point.AFTER_HEAD, "s1")  # not armed: returns at once
    (tmp_path / "sink-pause.release").write_text("")
    faults.pause(Point.AFTER_COPY, "s1")  # armed: waits for the release file, deletes it
    assert not (tmp_path / "sink-pause.release").exists()
