"""Whatever a client sends, it gets its error and everyone else is still served: malformed
requests, oversized lines, many clients at once, foreign peers, socket permissions
(docs/protocol.md §1, §2, §4)."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.support import reference
from tests.support.compare import assert_answer, assert_listing
from tests.support.corpus import Corpus
from tests.support.daemon import DaemonFactory, DaemonProcess

MAX_LINE = 1 << 20
NOBODY = 65534


class Raw:
    """A bare connection: bytes out, reply lines in."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes | None:
        """The next line, or None when the daemon closed the connection first."""
        while b"\n" not in self.buffer:
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def reply(self) -> dict[str, Any]:
        line = self.line()
        assert line is not None, "connection closed instead of a reply"
        reply = json.loads(line)
        assert isinstance(reply, dict)
        return reply

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        self.send(json.dumps(request).encode() + b"\n")
        return self.reply()

    def closed(self) -> bool:
        return self.line() is None


@pytest.fixture
def corpus_daemon(shared_daemon: DaemonProcess) -> DaemonProcess:
    """Here, one daemon serves every test of the module: they check it keeps serving."""
    return shared_daemon


@pytest.fixture
def raw(corpus_daemon: DaemonProcess) -> Iterator[Raw]:
    with corpus_daemon.connect_raw(timeout=10) as sock:
        yield Raw(sock)


def error_code(reply: dict[str, Any]) -> str:
    assert reply["ok"] is False, reply
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    code = reply["error"]["code"]
    assert isinstance(code, str)
    return code


def assert_still_served(corpus: Corpus, daemon: DaemonProcess) -> None:
    """A separate client gets correct answers."""
    snapshot = reference.Snapshot(reference.served_folders(corpus.env, [corpus.extra_dir]))
    workspace = corpus.workspaces["w05"]
    with daemon.client() as client:
        expected = snapshot.resume(workspace, 2)
        assert expected is not None
        assert_answer(client.resume(workspace, window=2), expected)
        assert_listing(client.list(workspace), snapshot.list(workspace))


BAD_REQUESTS: list[tuple[str, bytes]] = [
    ("garbage", b"garbage\n"),
    ("binary", b"\x00\x01\x02\x03\n"),
    ("invalid UTF-8", b'{"op":"ping","x":"\xff\xfe"}\n'),
    ("invalid UTF-8 alone", b"\xc3\x28\n"),
    ("lone surrogate", b'{"op":"get","id":"\\ud800"}\n'),
    ("truncated JSON", b'{"op":"ping"\n'),
    ("NaN", b'{"op":"resume","workspace":"/x","window":NaN}\n'),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000 + b"\n"),
    ("array", b'["op","ping"]\n'),
    ("string", b'"ping"\n'),
    ("number", b"42\n"),
    ("null", b"null\n"),
    ("no op", b"{}\n"),
    ("op not a string", b'{"op":5}\n'),
    ("op null", b'{"op":null}\n'),
    ("unknown op", b'{"op":"format_disk"}\n'),
    ("resume without workspace", b'{"op":"resume"}\n'),
    ("get without id", b'{"op":"get","window":3}\n'),
    ("workspace not a string", b'{"op":"resume","workspace":5}\n'),
    ("workspace relative", b'{"op":"resume","workspace":"relative/dir"}\n'),
    ("workspace empty", b'{"op":"resume","workspace":""}\n'),
    ("workspace with NUL", b'{"op":"resume","workspace":"/tmp/a\\u0000b"}\n'),
    ("window negative", b'{"op":"resume","workspace":"/x","window":-1}\n'),
    ("window a string", b'{"op":"resume","workspace":"/x","window":"3"}\n'),
    ("window a bool", b'{"op":"get","id":"abc","window":true}\n'),
    ("window a float", b'{"op":"get","id":"abc","window":1.5}\n'),
    ("sync a string", b'{"op":"resume","workspace":"/x","sync":"yes"}\n'),
    ("limit a string", b'{"op":"list","limit":"10"}\n'),
    ("offset negative", b'{"op":"list","offset":-2}\n'),
    ("list workspace relative", b'{"op":"list","workspace":"."}\n'),
    ("id escaping the folder", b'{"op":"get","id":"../../x"}\n'),
    ("id with a slash", b'{"op":"get","id":"a/b"}\n'),
    ("id with a dot", b'{"op":"get","id":"abc.json"}\n'),
    ("id empty", b'{"op":"get","id":""}\n'),
    ("id too long", b'{"op":"get","id":"' + b"a" * 129 + b'"}\n'),
    ("id a number", b'{"op":"get","id":12}\n'),
    ("sync timeout negative", b'{"op":"sync","timeout":-1}\n'),
    ("sync timeout zero", b'{"op":"sync","timeout":0}\n'),
    ("sync timeout a string", b'{"op":"sync","timeout":"soon"}\n'),
]


@pytest.mark.parametrize(("case", "payload"), BAD_REQUESTS, ids=[c for c, _ in BAD_REQUESTS])
def test_bad_request_gets_its_error_and_the_connection_keeps_working(
    corpus: Corpus, corpus_daemon: DaemonProcess, raw: Raw, case: str, payload: bytes
) -> None:
    raw.send(payload)
    assert error_code(raw.reply()) == "bad_request", case
    # The same connection answers the next request, and so does everyone else.
    pong = raw.ask({"op": "ping", "req": case})
    assert pong["ok"] is True and pong["req"] == case
    with corpus_daemon.client() as client:
        assert pong["instance"] == client.ping()["instance"]
    assert_still_served(corpus, corpus_daemon)


def test_req_is_echoed_in_answers_and_errors(raw: Raw, corpus: Corpus) -> None:
    tag = {"call": [1, "two", None], "n": 3.5}
    assert raw.ask({"op": "ping", "req": tag})["req"] == tag
    assert raw.ask({"op": "ping", "req": None}) == {**raw.ask({"op": "ping"}), "req": None}
    assert "req" not in raw.ask({"op": "ping"})
    reply = raw.ask({"op": "get", "id": "../../x", "req": "r1"})
    assert error_code(reply) == "bad_request" and reply["req"] == "r1"
    reply = raw.ask({"op": "format_disk", "req": 7})
    assert error_code(reply) == "bad_request" and reply["req"] == 7
    reply = raw.ask({"op": "get", "id": "no-such-session", "req": [7]})
    assert error_code(reply) == "not_found" and reply["req"] == [7]
    workspace = corpus.workspaces["w02"]
    reply = raw.ask({"op": "resume", "workspace": workspace, "req": "r2"})
    assert reply["ok"] and reply["req"] == "r2"
    assert reply["session_id"] == corpus.expected_resume[workspace]


def test_pipelined_requests_are_answered_in_order(raw: Raw, corpus: Corpus) -> None:
    workspace = corpus.workspaces["w02"]
    requests = [
        {"op": "ping", "req": 1},
        {"op": "nope", "req": 2},
        {"op": "resume", "workspace": workspace, "req": 3},
        {"op": "get", "id": corpus.ids[0], "window": 0, "req": 4},
        {"op": "list", "limit": 1, "req": 5},
    ]
    raw.send(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
    replies = [raw.reply() for _ in requests]
    assert [r["req"] for r in replies] == [1, 2, 3, 4, 5]
    assert [r["ok"] for r in replies] == [True, False, True, True, True]
    assert replies[2]["session_id"] == corpus.expected_resume[workspace]
    # A request split across writes is one request.
    line = json.dumps({"op": "resume", "workspace": workspace, "req": 6}).encode() + b"\n"
    raw.send(line[:7])
    raw.send(line[7:20])
    raw.send(line[20:])
    assert raw.reply()["session_id"] == corpus.expected_resume[workspace]


def padded_ping(total: int) -> bytes:
    """A ping request line of exactly `total` bytes, newline not counted."""
    head, tail = b'{"op":"ping","req":"big","pad":"', b'"}'
    return head + b"x" * (total - len(head) - len(tail)) + tail


def send_in_background(sock: socket.socket, data: bytes) -> threading.Thread:
    """Send without blocking the test: the daemon may close before reading it all."""

    def send() -> None:
        try:
            sock.sendall(data)
        except OSError:
            pass  # closed by the daemon: what an oversized line leads to

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_a_line_of_exactly_one_mib_is_served(raw: Raw) -> None:
    raw.send(padded_ping(MAX_LINE) + b"\n")
    reply = raw.reply()
    assert reply["ok"] is True and reply["req"] == "big"
    assert raw.ask({"op": "ping", "req": "after"})["req"] == "after"


def test_oversized_line_gets_too_large_and_the_connection_is_closed(
    corpus: Corpus, corpus_daemon: DaemonProcess, raw: Raw
) -> None:
    ok_line = json.dumps({"op": "ping", "req": "before"}).encode() + b"\n"
    sender = send_in_background(raw.sock, ok_line + padded_ping(MAX_LINE + 1) + b"\n")
    assert raw.reply()["req"] == "before"  # what came before it is still answered
    assert error_code(raw.reply()) == "too_large"
    assert raw.closed()
    sender.join(10)
    assert_still_served(corpus, corpus_daemon)


def test_endless_line_without_newline_gets_too_large(
    corpus: Corpus, corpus_daemon: DaemonProcess, raw: Raw
) -> None:
    sender = send_in_background(raw.sock, b"x" * (4 * MAX_LINE))
    assert error_code(raw.reply()) == "too_large"
    assert raw.closed()
    sender.join(10)
    assert_still_served(corpus, corpus_daemon)


def test_many_clients_at_once(corpus: Corpus, corpus_daemon: DaemonProcess) -> None:
    # 50 clients x 50 requests, each checked against the reference, while other connections
    # send garbage, oversized lines, or half a line and then nothing.
    snapshot = reference.Snapshot(reference.served_folders(corpus.env, [corpus.extra_dir]))
    workspaces = [w for w in corpus.all_workspaces() if snapshot.resume(w) is not None]
    expected_resume = {w: snapshot.resume(w) for w in workspaces}
    expected_get = {i: snapshot.get(i, 1) for i in corpus.ids}
    expected_list = {w: snapshot.list(w, 3) for w in workspaces}
    ids = sorted(expected_get)

    def worker(n: int) -> int:
        done = 0
        with corpus_daemon.client() as client:
            for j in range(50):
                k = n * 50 + j
                kind = k % 4
                if kind == 0:
                    assert client.ping()["ok"]
                elif kind == 1:
                    workspace = workspaces[k % len(workspaces)]
                    assert_answer(client.resume(workspace), expected_resume[workspace] or {})
                elif kind == 2:
                    session_id = ids[k % len(ids)]
                    assert_answer(client.get(session_id, window=1), expected_get[session_id] or {})
                else:
                    workspace = workspaces[k % len(workspaces)]
                    assert_listing(client.list(workspace, limit=3), expected_list[workspace])
                done += 1
        return done

    def vandal(n: int) -> None:
        for _ in range(10):
            with corpus_daemon.connect_raw(timeout=10) as sock:
                vandal_raw = Raw(sock)
                if n % 2:
                    vandal_raw.send(b"\xff garbage\n{]\n")
                    assert error_code(vandal_raw.reply()) == "bad_request"
                else:
                    send_in_background(sock, b"y" * (MAX_LINE + 10)).join(10)
                    assert error_code(vandal_raw.reply()) == "too_large"

    with corpus_daemon.connect_raw() as idle, ThreadPoolExecutor(max_workers=56) as pool:
        idle.sendall(b'{"op":"pi')  # half a request, never finished
        vandals = [pool.submit(vandal, n) for n in range(6)]
        workers = [pool.submit(worker, n) for n in range(50)]
        assert sum(f.result() for f in workers) == 2500
        for f in vandals:
            f.result()
    assert_still_served(corpus, corpus_daemon)


def test_socket_permissions(corpus_daemon: DaemonProcess) -> None:
    folder = os.path.dirname(corpus_daemon.socket_path)
    folder_st = os.stat(folder)
    assert stat.S_IMODE(folder_st.st_mode) == 0o700 and folder_st.st_uid == os.getuid()
    sock_st = os.lstat(corpus_daemon.socket_path)
    assert stat.S_ISSOCK(sock_st.st_mode)
    assert stat.S_IMODE(sock_st.st_mode) == 0o600 and sock_st.st_uid == os.getuid()


def test_own_uid_is_served_another_uid_is_refused(
    corpus: Corpus, corpus_daemon: DaemonProcess
) -> None:
    with corpus_daemon.client() as client:
        assert client.ping()["ok"]  # our own uid
    if os.getuid() != 0:
        pytest.skip("switching to another uid needs root")
    # Open the folder and the socket to everyone (test only), so that only the daemon's
    # own check stands between another user and the index.
    folder = os.path.dirname(corpus_daemon.socket_path)
    modes = [(p, stat.S_IMODE(os.stat(p).st_mode)) for p in (corpus_daemon.runtime_dir, folder)]
    modes.append((corpus_daemon.socket_path, 0o600))
    try:
        os.chmod(corpus_daemon.runtime_dir, 0o711)
        os.chmod(folder, 0o711)
        os.chmod(corpus_daemon.socket_path, 0o666)
        received = connect_as(NOBODY, corpus_daemon.socket_path, b'{"op":"ping"}\n')
    finally:
        for path, mode in modes:
            os.chmod(path, mode)
    assert b'"ok":true' not in received.replace(b" ", b"")
    assert len(received.splitlines()) <= 1  # at most one error line, then closed
    if received:
        assert json.loads(received.splitlines()[0])["ok"] is False
    refused = corpus_daemon.events_named("peer_refused")
    assert refused and refused[-1]["peer_uid"] == NOBODY
    assert_still_served(corpus, corpus_daemon)


def connect_as(uid: int, path: str, request: bytes) -> bytes:
    """Connect as `uid` in a forked child; return all it received before the daemon closed the
    connection (or b"TIMEOUT"/b"ERROR ..." when that is what happened)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only plain system calls, then _exit
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(path)
            try:
                sock.sendall(request)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before the request could even be sent
            data = b""
            try:
                while chunk := sock.recv(65536):
                    data += chunk
            except ConnectionResetError:
                pass
            except TimeoutError:
                data = b"TIMEOUT " + data
            os.write(write_end, data)
        except BaseException as exc:  # report whatever stopped the child
            os.write(write_end, f"ERROR {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    with os.fdopen(read_end, "rb") as reader:
        chunks.append(reader.read())
    os.waitpid(pid, 0)
    result = b"".join(chunks)
    assert not result.startswith((b"ERROR", b"TIMEOUT")), result
    return result


def test_second_daemon_on_the_same_socket_refuses_to_start(
    corpus: Corpus, corpus_daemon: DaemonProcess, daemons: DaemonFactory
) -> None:
    second = daemons(env_base=corpus.base, runtime_dir=corpus_daemon.runtime_dir)
    second.allowed_errors.add("start_failed")
    assert second.spawn().wait(20) == 1
    assert second.events_named("start_failed")
    assert_still_served(corpus, corpus_daemon)  # the first one was left alone


def test_socket_folder_open_to_others_is_refused(base: str, daemons: DaemonFactory) -> None:
    daemon = daemons()
    daemon.allowed_errors.add("start_failed")
    os.makedirs(os.path.dirname(daemon.socket_path), mode=0o777)
    os.chmod(os.path.dirname(daemon.socket_path), 0o777)
    assert daemon.spawn().wait(20) == 1
    failed = daemon.events_named("start_failed")
    assert failed and "chmod 700" in failed[0]["error"]
    assert not os.path.exists(daemon.socket_path)
