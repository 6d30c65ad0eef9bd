"""A real S3 server for tests (moto's server mode, a subprocess on 127.0.0.1), and helpers
to drive a HistorySink against it.

The server speaks S3 over HTTP like MinIO does, so the sink under test goes through boto3's
whole stack (signing, retries, the transfer manager). It can be stopped and started again on
the same port to simulate an outage. Moto keeps its state in memory, so a restart loses the
buckets; `start()` creates again every bucket made through `create_bucket()`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import boto3
from botocore.config import Config
from sessiond.logs import JsonFormatter
from sessiond.sink.config import SinkConfig

from tests.support.agent_sim import AgentSim, add_turn, expected_history, new_session

ACCESS_KEY = "moto-test-access"
SECRET_KEY = "moto-test-secret-do-not-log"
REGION = "us-east-1"
_STARTUP_DEADLINE_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class S3Server:
    """One moto server process; `endpoint` stays the same across stop/start."""

    def __init__(self, port: int | None = None, log_path: str | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self._proc: subprocess.Popen[bytes] | None = None
        self._buckets: list[str] = []

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            return
        log = open(self.log_path or os.devnull, "ab")  # noqa: SIM115 - owned by the child
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        self._wait_ready()
        for bucket in self._buckets:
            self.client().create_bucket(Bucket=bucket)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _STARTUP_DEADLINE_S
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited with status {self._proc.returncode}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1),
            ):
                return
            time.sleep(0.05)  # polling a readiness condition, not synchronising on time
        self.stop()
        raise RuntimeError(f"moto server on {self.endpoint} did not answer in time")

    # --- helpers for tests ----------------------------------------------------------------

    def client(self, access_key: str | None = None, secret_key: str | None = None) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def create_bucket(self, bucket: str) -> None:
        """Create `bucket` now and again after every restart."""
        self.client().create_bucket(Bucket=bucket)
        if bucket not in self._buckets:
            self._buckets.append(bucket)

    def get(self, bucket: str, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=bucket, Key=key)["Body"].read())

    def head(self, bucket: str, key: str) -> dict[str, Any]:
        return dict(self.client().head_object(Bucket=bucket, Key=key))

    def history_env(
        self, bucket: str, prefix: str = "hist", endpoint: str | None = None
    ) -> dict[str, str]:
        """The agent's CODETETHER_HISTORY_S3_* variables: a daemon given them uploads to `bucket`
        with this server's keys, here or at `endpoint` (a proxy in front of this server)."""
        return {
            "CODETETHER_HISTORY_S3_ENDPOINT": endpoint or self.endpoint,
            "CODETETHER_HISTORY_S3_BUCKET": bucket,
            "CODETETHER_HISTORY_S3_ACCESS_KEY": self.access_key,
            "CODETETHER_HISTORY_S3_SECRET_KEY": self.secret_key,
            "CODETETHER_HISTORY_S3_PREFIX": prefix,
        }

    def enable_auth(self) -> tuple[str, str]:
        """Make the server check signatures; return a key pair it accepts for S3.

        Moto only authenticates once told to (its `reset-auth` API). The user and key are made
        through its IAM API before that, while requests still pass unchecked.
        """
        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
        )
        iam.create_user(UserName="sink")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="sink", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="sink")["AccessKey"]
        request = urllib.request.Request(
            self.endpoint + "/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},  # else Flask eats the body as a form
        )
        with urllib.request.urlopen(request, timeout=5):
            pass
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        return self.access_key, self.secret_key

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- logs ------------------------------------------------------------------------------------


class LogLines(logging.Handler):
    """Every line sessiond logs, as the JSON formatter writes it, plus the decoded events."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def events(self, name: str) -> list[dict[str, object]]:
        decoded = (json.loads(line) for line in list(self.lines))
        return [event for event in decoded if event.get("event") == name]


# --- driving a HistorySink in tests ---------------------------------------------------------


def sink_config(server: S3Server, bucket: str, **overrides: object) -> SinkConfig:
    """A SinkConfig for `server`, with quick failure settings unless overridden."""
    fields: dict[str, object] = {
        "endpoint": server.endpoint,
        "bucket": bucket,
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        "max_attempts": 2,
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.5,
        "connect_timeout_s": 2.0,
        "read_timeout_s": 30.0,
    }
    fields.update(overrides)
    return SinkConfig(**fields)  # type: ignore[arg-type]


class Sessions:
    """Session files saved the agent's way, and the `locate` the daemon would give the sink."""

    def __init__(self, root: str) -> None:
        self.sim = AgentSim(os.path.join(root, "global"))
        self.sessions_dir = os.path.join(root, "ws", ".codetether-agent", "sessions")
        self.paths: dict[str, str] = {}
        self.docs: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def locate(self, session_id: str) -> str | None:
        with self.lock:
            return self.paths.get(session_id)

    def save(self, session: dict[str, Any]) -> str:
        path = self.sim.save(self.sessions_dir, session)
        with self.lock:
            self.paths[session["id"]] = path
            self.docs[session["id"]] = session
        return path

    def place(self, session_id: str, path: str) -> None:
        with self.lock:
            self.paths[session_id] = path

    def expected(self, session_id: str) -> bytes:
        return expected_history(self.docs[session_id])


def new_turns(count: int, seed: int = 0) -> dict[str, Any]:
    session = new_session("/home/dev/proj")
    rng = random.Random(seed)
    for _ in range(count):
        add_turn(session, rng)
    return session
