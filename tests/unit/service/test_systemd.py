"""The pure logic of sessiond.systemd: reading the socket activation variables, the text of a
notification, the watchdog interval, and the heartbeat's pings against a real datagram socket.
(tests/e2e/service/test_activation.py runs all of it under systemd-socket-activate.)"""

from __future__ import annotations

import ast
import asyncio
import os
from collections.abc import Callable, Iterator

import pytest
from sessiond.systemd import activation
from sessiond.systemd.activation import Activation, ActivationError, ListenFd
from sessiond.systemd.heartbeat import Heartbeat, watchdog_interval
from sessiond.systemd.notify import Notification, Notifier

from tests.support.notify import NotifySocket, short_tmp_dir
from tests.support.paths import ROOT

PID = 4242


# --- socket activation ----------------------------------------------------------------------


def test_no_listen_fds_is_no_activation() -> None:
    assert activation.parse({}, PID) is None
    assert activation.parse({"LISTEN_PID": str(PID)}, PID) is None
    assert activation.parse({"LISTEN_PID": str(PID), "LISTEN_FDS": ""}, PID) is None
    assert activation.parse({"LISTEN_PID": str(PID), "LISTEN_FDS": "0"}, PID) is None


def test_one_socket_for_this_process() -> None:
    got = activation.parse({"LISTEN_PID": str(PID), "LISTEN_FDS": "1"}, PID)
    assert got == Activation((ListenFd(3, activation.UNNAMED),))
    assert got is not None and got.first.fd == 3


def test_named_sockets_count_from_fd_3() -> None:
    env = {"LISTEN_PID": str(PID), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "sessiond:extra"}
    got = activation.parse(env, PID)
    assert got == Activation((ListenFd(3, "sessiond"), ListenFd(4, "extra")))


def test_sockets_for_another_process_are_not_ours() -> None:
    assert activation.parse({"LISTEN_PID": str(PID + 1), "LISTEN_FDS": "1"}, PID) is None


def test_a_missing_listen_pid_is_accepted() -> None:
    assert activation.parse({"LISTEN_FDS": "1"}, PID) == Activation((ListenFd(3, "unknown"),))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LISTEN_FDS", "two"),
        ("LISTEN_FDS", "-1"),
        ("LISTEN_FDS", " 1"),
        ("LISTEN_FDS", "1.0"),
        ("LISTEN_FDS", "\u00b2"),  # a digit to str.isdigit, not to systemd
        ("LISTEN_PID", "self"),
        ("LISTEN_PID", "-4242"),
    ],
)
def test_bad_numbers_are_a_clear_error(name: str, value: str) -> None:
    env = {"LISTEN_PID": str(PID), "LISTEN_FDS": "1", name: value}
    with pytest.raises(ActivationError) as raised:
        activation.parse(env, PID)
    assert f"{name}={value!r}" in str(raised.value)


@pytest.mark.parametrize(("count", "names"), [("1", "a:b"), ("2", "a"), ("3", "a::b:c")])
def test_names_must_match_the_count(count: str, names: str) -> None:
    env = {"LISTEN_PID": str(PID), "LISTEN_FDS": count, "LISTEN_FDNAMES": names}
    with pytest.raises(ActivationError, match="LISTEN_FDNAMES"):
        activation.parse(env, PID)


def test_take_removes_the_variables_even_when_they_are_malformed() -> None:
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "s", "HOME": "/h"}
    assert activation.take(env) == Activation((ListenFd(3, "s"),))
    assert env == {"HOME": "/h"}
    bad = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "x", "HOME": "/h"}
    with pytest.raises(ActivationError):
        activation.take(bad)
    assert bad == {"HOME": "/h"}


# --- notifications --------------------------------------------------------------------------


def test_notification_text() -> None:
    assert Notification(ready=True, status="serving 3").text() == "READY=1\nSTATUS=serving 3"
    assert Notification(stopping=True, status="stopping").text() == "STOPPING=1\nSTATUS=stopping"
    assert Notification(reloading=True, monotonic_usec=12).text() == (
        "RELOADING=1\nMONOTONIC_USEC=12"
    )
    assert Notification(status="up", watchdog=True).text() == "STATUS=up\nWATCHDOG=1"
    assert Notification(watchdog=True).text() == "WATCHDOG=1"
    assert Notification().text() == ""


def test_a_status_stays_on_one_line() -> None:
    assert Notification(status="a\nREADY=1\r\nb").text() == "STATUS=a READY=1 b"


def test_without_a_notify_socket_nothing_is_sent() -> None:
    for env in ({}, {"NOTIFY_SOCKET": ""}):
        notifier = Notifier.from_env(env)
        assert not notifier.active
        assert not notifier.ready("x")
        assert not notifier.stopping()
        assert not notifier.watchdog()


def test_a_notify_socket_nobody_listens_on_is_no_error(tmp_path) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    assert notifier.active
    assert not notifier.ready()


def test_an_empty_notification_is_not_sent(receiver: NotifySocket) -> None:
    notifier = Notifier(receiver.path)
    assert not notifier.send(Notification())
    assert notifier.status("one")
    assert receiver.collect(0.2) == [{"STATUS": "one"}]


# --- the watchdog ---------------------------------------------------------------------------


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "400000"}) == 0.2
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=8) is None
    own = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(own) == 1.0
    for usec in ("", "0", "-5", "soon", "1e6"):
        assert watchdog_interval({"WATCHDOG_USEC": usec}) is None
    assert watchdog_interval({}) is None


@pytest.fixture
def receiver() -> Iterator[NotifySocket]:
    base = short_tmp_dir()
    sock = NotifySocket(os.path.join(base, "notify"))
    yield sock
    sock.close()
    os.rmdir(base)


def healthy_for(beats: int) -> Callable[[], bool]:
    left = [beats]

    def healthy() -> bool:
        left[0] -= 1
        return left[0] >= 0

    return healthy


def test_without_a_watchdog_only_status_changes_are_sent(receiver: NotifySocket) -> None:
    texts = iter(["building", "building", "serving 1", "serving 1", "serving 2"])
    beat = Heartbeat(Notifier(receiver.path), {}, tick_s=0.001)
    assert not beat.watchdog
    asyncio.run(beat.run(healthy_for(5), lambda: next(texts)))
    assert receiver.collect(0.2) == [
        {"STATUS": "building"},
        {"STATUS": "serving 1"},
        {"STATUS": "serving 2"},
    ]


def test_watchdog_pings_stop_once_unhealthy(receiver: NotifySocket) -> None:
    beat = Heartbeat(Notifier(receiver.path), {"WATCHDOG_USEC": "20000"}, tick_s=1.0)
    assert beat.interval == 0.01 and beat.watchdog
    asyncio.run(beat.run(healthy_for(6), lambda: "serving"))  # ticks of 5 ms: half the interval
    messages = receiver.collect(0.2)
    assert messages[0] == {"STATUS": "serving", "WATCHDOG": "1"}  # the first tick pings
    assert all(m == {"WATCHDOG": "1"} for m in messages[1:])  # the status is sent once
    assert 2 <= len(messages) <= 6  # one ping per interval at most, and run() has returned


# --- the boundary ---------------------------------------------------------------------------

DAEMON = ROOT / "daemon" / "sessiond"
SYSTEMD_NAMES = {
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
}


# No import cycles, and logs.py importing nothing of sessiond: tests/unit/test_layering.py.


def test_only_the_systemd_package_reads_systemd_s_variables_or_imports_systemd_python() -> None:
    offenders = []
    for path in DAEMON.rglob("*.py"):
        if path.parent.name == "systemd" and path.parent.parent == DAEMON:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            named = isinstance(node, ast.Constant) and node.value in SYSTEMD_NAMES
            imported = (
                isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "systemd"
            ) or (
                isinstance(node, ast.Import)
                and any(a.name.split(".")[0] == "systemd" for a in node.names)
            )
            if named or imported:
                offenders.append(f"{path.relative_to(DAEMON)}:{node.lineno}")
    assert offenders == []
