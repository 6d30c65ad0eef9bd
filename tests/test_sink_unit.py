"""The history sink's parts without a server: config, body bytes, ledger, schedule, errors."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from sessiond.config import ConfigError, s3_settings
from sessiond.sink import SinkConfig
from sessiond.sink.errors import BUCKET, CREDENTIALS, UNREACHABLE, RateLimiter, classify
from sessiond.sink.history import UnreadableSession, history_body, read_history
from sessiond.sink.ledger import Ledger, LedgerEntry
from sessiond.sink.schedule import UPLOADED, Schedule
from support.agent_sim import AgentSim, add_turn, compact, new_session

SAMPLES = Path(__file__).resolve().parent / "data"
SECRET = "s3cr3t-KEY-never-shown"
ENV = {
    "CODETETHER_HISTORY_S3_ENDPOINT": "http://127.0.0.1:9000",
    "CODETETHER_HISTORY_S3_BUCKET": "codetether-history",
    "CODETETHER_HISTORY_S3_ACCESS_KEY": "minioadmin",
    "CODETETHER_HISTORY_S3_SECRET_KEY": SECRET,
}


def expected_body(session: dict) -> bytes:
    return b"".join(compact(message) + b"\n" for message in session["messages"])


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
    assert sliced.body == pretty.body == expected_body(session)
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
    s.succeed(attempt, UPLOADED, 0.5)
    sid, _ = s.next_due(0.5)
    second = s.begin("a")
    assert sid == "a" and second.seq == s.seq
    s.succeed(second, UPLOADED, 1.0)
    assert s.next_due(1.0)[0] is None and s.counts()["pending"] == 0


def test_backoff_is_capped_exponential_and_flush_kick_retries_now() -> None:
    s = schedule()
    assert [s.backoff(n) for n in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, 60.0]
    s.change("a", 0.0, immediate=True)
    attempt = s.begin("a")
    assert s.fail(attempt, 1.0, retry=True) == 0.5
    assert s.counts() == {"pending": 1, "in_flight": 0, "retrying": 1}
    snapshot = s.snapshot()
    epoch = s.kick(1.1)
    assert s.next_due(1.1)[1] <= 0
    retry = s.begin("a")
    assert s.progress(snapshot, epoch).pending == 1
    s.fail(retry, 1.2, retry=True)
    assert s.progress(snapshot, epoch).failed == 1  # failed for this flush, still retried later
    assert s.counts()["retrying"] == 1


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
        CREDENTIALS: [
            client_error("InvalidAccessKeyId", 403),
            client_error("SignatureDoesNotMatch", 403),
        ],
        BUCKET: [client_error("NoSuchBucket", 404)],
        UNREACHABLE: [EndpointConnectionError(endpoint_url=config.endpoint)],
    }
    for kind, errors in cases.items():
        for exc in errors:
            error = classify(exc, config)
            assert error.kind == kind and SECRET not in error.message
    assert "CODETETHER_HISTORY_S3_SECRET_KEY" in classify(cases[CREDENTIALS][1], config).message
    assert "create it" in classify(cases[BUCKET][0], config).message


def test_rate_limiter_lets_first_through_then_one_per_interval() -> None:
    limiter = RateLimiter(interval_s=30.0, setup_interval_s=600.0)
    assert limiter.allow("unreachable", 0.0) == 0
    assert limiter.allow("unreachable", 1.0) is None
    assert limiter.allow("unreachable", 2.0) is None
    assert limiter.allow("unreachable", 31.0) == 2
    assert limiter.allow("credentials", 0.0) == 0
    assert limiter.allow("credentials", 100.0) is None
