"""sessiond's systemd glue in-process: journal fields, journal detection, the watchdog interval
and notifications, each against real sockets and files. (tests/e2e/service/test_user_manager.py
runs the same code under a real user manager and journald.)"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sessiond.logs import LOGGER_NAME, log_event
from sessiond.systemd import journal as sd_journal
from sessiond.systemd.heartbeat import watchdog_interval
from sessiond.systemd.notify import Notifier, send_datagram

from tests.support.notify import NotifySocket, short_tmp_dir


class Recorder:
    """A sender with `systemd.journal.send`'s signature that keeps what it is given."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, MESSAGE: str, **fields: Any) -> None:
        self.calls.append({"MESSAGE": MESSAGE, **fields})


@pytest.fixture
def journal() -> Iterator[Recorder]:
    recorder = Recorder()
    logger = logging.getLogger(LOGGER_NAME)
    saved = logger.handlers[:], logger.level, logger.propagate
    logger.handlers[:] = [sd_journal.JournalHandler(sender=recorder)]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield recorder
    logger.handlers[:], logger.level, logger.propagate = saved


def test_an_event_becomes_journal_fields(journal: Recorder) -> None:
    log_event(
        "upload_done", session_id="s-1", bytes=1234, duration_ms=5.5, multipart=False, error=None
    )
    [entry] = journal.calls
    assert entry["MESSAGE"] == (
        "upload_done: session_id=s-1 bytes=1234 duration_ms=5.5 multipart=false"
    )
    assert entry["EVENT"] == "upload_done"
    assert entry["PRIORITY"] == "6"
    assert entry["SYSLOG_IDENTIFIER"] == "sessiond"
    assert (entry["SESSION_ID"], entry["BYTES"], entry["DURATION_MS"]) == ("s-1", "1234", "5.5")
    assert entry["MULTIPART"] == "false"
    assert "ERROR" not in entry  # a None field is left out, not written as "None"
    assert entry["CODE_FILE"] == __file__  # where the event was logged, not logs.py
    assert entry["CODE_FUNC"] == "test_an_event_becomes_journal_fields"


def test_levels_tracebacks_and_odd_field_names(journal: Recorder) -> None:
    log_event("stop", logging.DEBUG)
    log_event("overflow", logging.WARNING, count=2)
    log_event("root_unwatchable", logging.ERROR, root="/x", **{"peer-uid": 7, "message": "m"})
    try:
        raise ValueError("boom")
    except ValueError:
        log_event("crash", logging.CRITICAL, exc_info=True, roots=["/a", "/b"])
    debug, warning, error, critical = journal.calls
    assert (debug["PRIORITY"], debug["MESSAGE"], debug["EVENT"]) == ("7", "stop", "stop")
    assert warning["PRIORITY"] == "4"
    assert error["PRIORITY"] == "3"
    assert error["PEER_UID"] == "7"
    assert error["FIELD_MESSAGE"] == "m"  # never overrides the journal's own MESSAGE
    assert critical["PRIORITY"] == "2"
    assert critical["ROOTS"] == '["/a", "/b"]'
    assert "ValueError: boom" in critical["TRACEBACK"]
    assert critical["MESSAGE"].startswith('crash: roots=["/a", "/b"]\nTraceback')


def test_a_library_record_keeps_its_message() -> None:
    record = logging.LogRecord("watchdog", logging.WARNING, "w.py", 1, "lost %d events", (3,), None)
    fields = sd_journal.journal_fields(record)
    assert fields["MESSAGE"] == "lost 3 events"
    assert (fields["EVENT"], fields["LOGGER"], fields["PRIORITY"]) == ("log", "watchdog", "4")


def test_field_names_are_valid_journal_names() -> None:
    assert sd_journal.field_name("session_id") == "SESSION_ID"
    assert sd_journal.field_name("_private") == "PRIVATE"
    assert sd_journal.field_name("2fa") == "FIELD_2FA"
    assert sd_journal.field_name("priority") == "FIELD_PRIORITY"
    assert sd_journal.field_name("x" * 80) == "X" * 64


def test_stderr_is_journal_compares_device_and_inode(tmp_path) -> None:
    with open(tmp_path / "a", "w") as a, open(tmp_path / "b", "w") as b:
        st = os.fstat(a.fileno())
        stream = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert sd_journal.stderr_is_journal(stream, fd=a.fileno())
        assert not sd_journal.stderr_is_journal(stream, fd=b.fileno())  # stderr redirected
        assert not sd_journal.stderr_is_journal({}, fd=a.fileno())
        assert not sd_journal.stderr_is_journal({"JOURNAL_STREAM": "8:x"}, fd=a.fileno())


def chosen_format(stderr_path: str, env: dict[str, str]) -> str:
    code = "from sessiond.logsetup import configure; print(configure('auto'))"
    with open(stderr_path, "w") as err:
        st = os.fstat(err.fileno())
        env = {k: v.format(stream=f"{st.st_dev}:{st.st_ino}") for k, v in env.items()}
        result = subprocess.run(
            [sys.executable, "-c", code],
            env={**{k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}, **env},
            stderr=err,
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
    return result.stdout.strip()


def test_auto_picks_the_journal_only_when_stderr_is_the_journal_stream(tmp_path) -> None:
    journal = "journal" if sd_journal.journal_available() else "json"
    assert chosen_format(str(tmp_path / "e"), {"JOURNAL_STREAM": "{stream}"}) == journal
    assert chosen_format(str(tmp_path / "e"), {}) == "json"
    assert chosen_format(str(tmp_path / "e"), {"JOURNAL_STREAM": "1:2"}) == "json"


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "400000"}) == 0.2
    own = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(own) == 15.0
    assert watchdog_interval({**own, "WATCHDOG_PID": "1"}) is None  # not for us
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_notify_reaches_the_notify_socket(monkeypatch) -> None:
    base = short_tmp_dir()
    receiver = NotifySocket(os.path.join(base, "notify"))
    try:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
        assert not Notifier.from_env().ready()  # not under systemd: nothing to tell
        monkeypatch.setenv("NOTIFY_SOCKET", receiver.path)
        notifier = Notifier.from_env()
        assert notifier.ready("serving")  # through sd_notify when installed
        assert receiver.wait_key("READY") == {"READY": "1", "STATUS": "serving"}
        assert send_datagram(receiver.path, "WATCHDOG=1")  # without systemd-python
        assert receiver.wait_key("WATCHDOG") == {"WATCHDOG": "1"}
        assert notifier.reloading()
        assert int(receiver.wait_key("RELOADING")["MONOTONIC_USEC"]) > 0
    finally:
        receiver.close()
        os.rmdir(base)


def test_notify_to_an_abstract_socket() -> None:
    name = f"sessiond-test-{uuid.uuid4().hex}"
    receiver = NotifySocket("\0" + name)
    try:
        assert send_datagram("@" + name, "STOPPING=1")
        assert receiver.wait_key("STOPPING") == {"STOPPING": "1"}
    finally:
        receiver.close()


def test_json_lines_are_one_object_each(tmp_path) -> None:
    code = (
        "from sessiond.logs import log_event; from sessiond.logsetup import configure; "
        "configure('json'); "
        "log_event('ready', sessions=2, workspaces=1, duration_ms=3.0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    [line] = result.stderr.splitlines()
    body = json.loads(line)
    assert body["event"] == "ready" and body["level"] == "info"
    assert (body["sessions"], body["workspaces"], body["duration_ms"]) == (2, 1, 3.0)
