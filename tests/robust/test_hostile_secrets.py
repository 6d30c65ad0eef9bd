"""Secrets in the S3 endpoint: a URL with user:password or a query string never reaches a log
line, a traceback, `status` or `doctor`; a sink that cannot start is reported dead (status,
flush at once with the reason, doctor); an endpoint with an invalid port is a clean
`start_failed`. Answers about sessions stay the cold scan's throughout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from sessionctl import DaemonError

from tests.support.daemon import DaemonFactory, wait_for
from tests.support.robust import Agent, agent_with, assert_every_answer
from tests.support.s3server import S3Server

PASSWORD = "hunter2-endpoint-password"
TOKEN = "query-token-0123456789"
SECRET_KEY = "sink-secret-key-never-logged"
WORDS = (PASSWORD, TOKEN, SECRET_KEY)


def sink_env(endpoint: str, access_key: str = "AKIATESTKEY", secret: str = SECRET_KEY) -> dict:
    return {
        "CODETETHER_HISTORY_S3_ENDPOINT": endpoint,
        "CODETETHER_HISTORY_S3_BUCKET": "history",
        "CODETETHER_HISTORY_S3_ACCESS_KEY": access_key,
        "CODETETHER_HISTORY_S3_SECRET_KEY": secret,
    }


@pytest.fixture
def agent(base: str) -> Agent:
    return agent_with(base, {"alpha": (2,)})


def assert_no_secret(text: str, where: str) -> None:
    for word in WORDS:
        assert word not in text, f"{word!r} in {where}:\n{text}"


def doctor(base: str, env: dict[str, str]) -> str:
    command = [sys.executable, "-m", "sessiond", "doctor", "--no-discover"]
    command += ["--socket", os.path.join(base, "doctor.sock"), "--state-dir", f"{base}/dstate"]
    result = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    return result.stdout + result.stderr


def test_an_endpoint_botocore_refuses_is_a_dead_sink_and_no_secret_leaks(
    agent: Agent, daemons: DaemonFactory, base: str
) -> None:
    endpoint = f"http://sessiond:{PASSWORD}@bad_host.example:9000/?token={TOKEN}"
    env = sink_env(endpoint)
    daemon = daemons(env=env)
    daemon.allowed_errors |= {"sink_error", "sink_dead"}
    daemon.start()
    with daemon.client() as client:
        agent.save(agent.new(agent.workspaces[0], 1))
        client.sync(timeout=20)
        uploads = client.status()["uploads"]
        assert uploads["state"] == "dead"
        assert "bad_host.example" in uploads["last_error"]
        assert_no_secret(repr(client.status()), "status")
        started = time.monotonic()
        with pytest.raises(DaemonError) as refused:
            client.flush(timeout=30)
        assert refused.value.code == "unavailable"
        assert "dead" in str(refused.value) and time.monotonic() - started < 5
        assert_no_secret(str(refused.value), "the flush error")
        assert_every_answer(client, agent.served(), agent.workspaces, list(agent.docs))
    errors = daemon.events_named("sink_error")
    assert errors and "traceback" in errors[0]  # the traceback is there, redacted
    assert "***@bad_host.example" in daemon.log_text()
    report = doctor(base, env)
    assert "bad_host.example" in report
    assert_no_secret(report, "doctor")
    assert daemon.stop() == 0
    assert_no_secret(daemon.log_text(), "the log")


def test_a_query_string_in_the_endpoint_stays_out_of_logs_and_status(
    agent: Agent, daemons: DaemonFactory, s3_server: S3Server
) -> None:
    env = sink_env(f"{s3_server.endpoint}/?X-Amz-Security-Token={TOKEN}", s3_server.access_key)
    env["CODETETHER_HISTORY_S3_SECRET_KEY"] = s3_server.secret_key
    daemon = daemons(env=env)
    daemon.allowed_errors |= {"sink_error", "sink_dead"}
    daemon.start()
    with daemon.client() as client:
        status = client.status()
        assert TOKEN not in repr(status)
        wait_for(lambda: daemon.events_named("sink_started"), 20, "the sink to start")
        started = daemon.events_named("sink_started")[0]
        assert started["endpoint"].endswith("?***")
        assert_every_answer(client, agent.served(), agent.workspaces, list(agent.docs))
    assert daemon.stop() == 0
    assert TOKEN not in daemon.log_text()


@pytest.mark.parametrize("port", ["99999", "abc"])
def test_an_invalid_port_is_a_clean_start_failed(
    agent: Agent, daemons: DaemonFactory, port: str
) -> None:
    daemon = daemons(env=sink_env(f"http://sessiond:{PASSWORD}@localhost:{port}"))
    daemon.allowed_errors.add("start_failed")
    proc = daemon.spawn()
    assert proc.wait(timeout=30) != 0
    daemon.returncode = proc.returncode
    assert daemon.events_named("start_failed"), daemon.log_text()
    assert not daemon.events_named("crash"), daemon.log_text()
    assert "port" in daemon.events_named("start_failed")[0]["error"]
    assert_no_secret(daemon.log_text(), "the log")
