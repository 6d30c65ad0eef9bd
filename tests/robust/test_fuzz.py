"""Fuzzing the request decoder (docs/protocol.md §2, §3): the pure framing and request checks
with hypothesis and atheris, and a real daemon's socket with hypothesis. No exception but the
protocol's own escapes; every input gets a valid error (never `internal`) or, for an oversized
line only, a closed connection; and afterwards the daemon still answers, correctly.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from sessionctl.agent import is_valid_session_id
from sessionctl.protocol import (
    MAX_WAIT_TIMEOUT_S,
    OPS,
    ErrorCode,
    LineSplitter,
    LineTooLarge,
    ProtocolError,
    decode_request,
)

from tests.support.daemon import DaemonFactory, DaemonProcess
from tests.support.paths import FUZZ
from tests.support.robust import Agent, assert_every_answer

FUZZ_DIR = str(FUZZ)
ATHERIS_RUNS = int(os.environ.get("SESSIOND_ATHERIS_RUNS", "100000"))
SOCKET_EXAMPLES = int(os.environ.get("SESSIOND_SOCKET_FUZZ_EXAMPLES", "1500"))
CODES = {str(code) for code in ErrorCode}
QUICK = settings(deadline=None, database=None, max_examples=2000)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELD_VALUES = (
    json_values
    | st.sampled_from(["/", "/tmp", "/no/such/dir", "/tmp/a\x00b", "relative", "", "../../x"])
    | st.text(alphabet="/ab.-_\u00e9\x00", min_size=1, max_size=300).map(lambda s: "/" + s)
    | st.integers(min_value=-3, max_value=10**6)
    | st.floats(min_value=-1, max_value=1e6, allow_nan=False)
)
# Ops that stream (`watch`) are left out: their answer is a stream, not one reply.
REQUESTS = st.fixed_dictionaries(
    {"op": st.sampled_from(sorted(set(OPS) - {"watch"})) | st.text(max_size=10)},
    optional={
        name: FIELD_VALUES
        for name in ("workspace", "window", "sync", "id", "limit", "offset", "timeout", "req")
    },
)


# --- pure: framing -------------------------------------------------------------------------------


def model_lines(stream: bytes, limit: int | None) -> tuple[list[bytes], bool]:
    """What the framing must give, whatever the chunking: the lines up to the first one over
    the limit, and whether there is one (the unfinished tail counts once it is over)."""
    *complete, tail = stream.split(b"\n")
    lines = []
    for line in complete:
        if limit is not None and len(line) > limit:
            return lines, True
        lines.append(line)
    return lines, limit is not None and len(tail) > limit


@QUICK
@given(
    chunks=st.lists(st.binary(max_size=64) | st.sampled_from([b"\n", b"\n\n", b"x" * 70])),
    limit=st.none() | st.integers(min_value=0, max_value=64),
)
def test_line_splitter_gives_exactly_the_lines_whatever_the_chunks(
    chunks: list[bytes], limit: int | None
) -> None:
    splitter = LineSplitter(limit=limit)
    lines: list[bytes] = []
    for chunk in chunks:
        try:
            lines += splitter.feed(chunk)
        except LineTooLarge:
            assert splitter.too_large
            with pytest.raises(LineTooLarge):  # and it stays refused
                splitter.feed(b"\n")
            break
    expected, too_large = model_lines(b"".join(chunks), limit)
    assert lines == expected
    assert splitter.too_large == too_large
    if not too_large:
        consumed = sum(len(line) + 1 for line in lines)
        assert consumed + splitter.pending == sum(map(len, chunks))


# --- pure: request checks ------------------------------------------------------------------------


def check_parsed(obj: Any) -> None:
    """decode_request either refuses with bad_request or returns only well-typed fields."""
    try:
        request = decode_request(obj)
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_REQUEST and exc.message
        return
    assert isinstance(obj, dict) and type(request) is OPS[obj["op"]]
    fields = request.fields()
    assert set(fields) == {field.name for field in OPS[request.op].FIELDS}
    for name, value in fields.items():
        if name == "workspace":
            assert value is None or (
                isinstance(value, str) and value.startswith("/") and "\x00" not in value
            )
        elif name in ("window",):
            assert value is None or (type(value) is int and value >= 0)
        elif name in ("limit", "offset"):
            assert type(value) is int and value >= 0
        elif name == "sync":
            assert type(value) is bool
        elif name == "timeout":
            assert type(value) is float and 0 < value <= MAX_WAIT_TIMEOUT_S
        elif name == "id":
            assert is_valid_session_id(value)
        elif name == "query":
            assert isinstance(value, str) and value.strip()
        elif name == "machine":
            assert value is None or (isinstance(value, str) and 1 <= len(value) <= 63)
        elif name == "dry_run":
            assert type(value) is bool
        else:
            raise AssertionError(f"a field this check does not know: {name}")


@QUICK
@given(json_values)
def test_decode_request_takes_any_json_value(obj: Any) -> None:
    check_parsed(obj)


@QUICK
@given(REQUESTS)
def test_decode_request_takes_any_request_shaped_object(obj: dict[str, Any]) -> None:
    check_parsed(obj)


# --- atheris -------------------------------------------------------------------------------------


def test_atheris_harness_runs_clean(tmp_path: Any) -> None:
    pytest.importorskip("atheris", reason="atheris is not installed (see pyproject test deps)")
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(FUZZ_DIR, "fuzz_protocol.py"),
            f"-runs={ATHERIS_RUNS}",
            "-seed=20260801",
            "-max_len=256",
            f"-dict={os.path.join(FUZZ_DIR, 'protocol.dict')}",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    done = re.search(r"Done (\d+) runs", result.stderr)
    assert done and int(done.group(1)) == ATHERIS_RUNS, result.stderr[-2000:]
    print(f"\natheris: {done.group(1)} inputs, no finding")


# --- a real daemon's socket ----------------------------------------------------------------------


def replies(sock: socket.socket, count: int) -> list[dict[str, Any]] | None:
    """`count` reply lines, or None if the daemon closed the connection first."""
    data = b""
    while data.count(b"\n") < count:
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return None
        data += chunk
    lines = data.split(b"\n")[:count]
    return [json.loads(line) for line in lines]


def assert_valid_reply(reply: Any) -> None:
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
    if not reply["ok"]:
        error = reply["error"]
        assert error["code"] in CODES and isinstance(error["message"], str), reply
        assert error["code"] != "internal", f"a request hit a daemon bug: {reply}"


def exchange(daemon: DaemonProcess, payload: bytes) -> None:
    """Send `payload` (newline-terminated) on a fresh connection: one valid reply per line,
    then the connection still answers a ping."""
    with daemon.connect_raw(timeout=30) as sock:
        sock.sendall(payload)
        got = replies(sock, payload.count(b"\n"))
        assert got is not None, f"connection closed on {payload[:200]!r}"
        for reply in got:
            assert_valid_reply(reply)
        sock.sendall(b'{"op":"ping","req":"after"}\n')
        pong = replies(sock, 1)
        assert pong is not None and pong[0]["ok"] and pong[0]["req"] == "after"


def encode(obj: dict[str, Any]) -> bytes:
    text = json.dumps(obj, ensure_ascii=False, allow_nan=True)
    return text.encode("utf-8", "surrogatepass") + b"\n"


def test_daemon_socket_answers_any_input_and_keeps_serving(
    base: str, daemons: DaemonFactory
) -> None:
    agent = Agent(base, os.path.join(base, "ws"))
    workspace = agent.add_workspace("fuzzed")
    for turns in (1, 3):
        agent.save(agent.new(workspace, turns))
    daemon = daemons().start()
    sent = {"bytes": 0, "objects": 0}
    fuzz = settings(
        max_examples=SOCKET_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )

    @fuzz
    @given(st.binary(max_size=3000))
    def any_bytes(data: bytes) -> None:
        sent["bytes"] += 1
        exchange(daemon, data + b"\n")

    @fuzz
    @given(st.lists(REQUESTS, min_size=1, max_size=4))
    def any_requests(objects: list[dict[str, Any]]) -> None:
        sent["objects"] += len(objects)
        exchange(daemon, b"".join(encode(obj) for obj in objects))

    any_bytes()
    any_requests()
    with daemon.client() as client:
        assert client.ping()["ok"]
        client.sync()
        assert_every_answer(client, agent.served(), agent.workspaces, list(agent.docs), window=2)
    print(f"\nsocket fuzz: {sent['bytes']} byte strings, {sent['objects']} request objects")
    assert sent["bytes"] >= SOCKET_EXAMPLES and sent["objects"] >= SOCKET_EXAMPLES
