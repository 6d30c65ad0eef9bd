"""The sans-I/O protocol: framing and request checking, without sockets."""

from __future__ import annotations

import json

import pytest
from sessionctl.protocol import (
    MAX_LINE_BYTES,
    ErrorCode,
    Get,
    LineSplitter,
    LineTooLarge,
    List,
    Ping,
    ProtocolError,
    Resume,
    decode_request,
    encode_message,
    encode_request,
    error_response,
    ok_response,
    peek_req,
)


def test_lines_are_cut_across_chunks() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b'{"op":"pi') == []
    assert splitter.feed(b'ng"}\n{"op"') == [b'{"op":"ping"}']
    assert splitter.feed(b':"status"}\n\n') == [b'{"op":"status"}', b""]
    assert splitter.pending == 0


def test_a_line_over_the_limit_is_refused_after_the_lines_before_it() -> None:
    splitter = LineSplitter(limit=8)
    assert splitter.feed(b"ok\n" + b"x" * 9) == [b"ok"]
    assert splitter.too_large
    with pytest.raises(LineTooLarge):
        splitter.feed(b"\n")


def test_exactly_the_limit_is_accepted() -> None:
    splitter = LineSplitter()
    line = b"a" * MAX_LINE_BYTES
    assert splitter.feed(line[:1000]) == []
    assert splitter.feed(line[1000:] + b"\n") == [line]
    with pytest.raises(LineTooLarge):
        LineSplitter().feed(line + b"a")


def test_unlimited_splitter_for_large_responses() -> None:
    splitter = LineSplitter(limit=None)
    body = b"y" * (3 * MAX_LINE_BYTES)
    assert splitter.feed(body) == []
    assert splitter.feed(b"\n") == [body]


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ([], "JSON object"),
        ({"op": 3}, "string 'op'"),
        ({"op": "nope"}, "unknown op"),
        ({"op": "resume"}, "needs field 'workspace'"),
        ({"op": "resume", "workspace": "rel/path"}, "absolute"),
        ({"op": "resume", "workspace": "/a\x00b"}, "NUL"),
        ({"op": "resume", "workspace": "/a", "window": -1}, ">= 0"),
        ({"op": "resume", "workspace": "/a", "window": True}, ">= 0"),
        ({"op": "resume", "workspace": "/a", "sync": "yes"}, "true or false"),
        ({"op": "get", "id": "../../x"}, "letters, digits"),
        ({"op": "get", "id": "a" * 129}, "letters, digits"),
        ({"op": "list", "limit": 1.5}, ">= 0"),
        ({"op": "sync", "timeout": 0}, "greater than 0"),
        ({"op": "flush", "timeout": float("nan")}, "seconds"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(obj: object, fragment: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(obj)
    assert caught.value.code is ErrorCode.BAD_REQUEST
    assert fragment in caught.value.message


def test_defaults_and_req_echo() -> None:
    obj = {"op": "list", "req": [1, "a"], "unknown": 1}
    request = decode_request(obj)
    assert request == List()
    assert request.fields() == {"workspace": None, "limit": 100, "offset": 0, "sync": False}
    assert peek_req(obj) == [1, "a"]
    assert ok_response({"total": 0}, req=peek_req(obj)) == {"ok": True, "total": 0, "req": [1, "a"]}
    assert decode_request({"op": "ping"}) == Ping()
    assert "req" not in ok_response({}, req=peek_req({"op": "ping"}))


def test_unicode_session_ids_follow_the_agent() -> None:
    assert decode_request({"op": "get", "id": "sessão_1-é"}) == Get("sessão_1-é")


def test_client_encoding_round_trips() -> None:
    line = encode_request(Resume("/p"), req=7)
    assert line.endswith(b"\n")
    assert json.loads(line) == {"op": "resume", "workspace": "/p", "req": 7}
    assert encode_message("resume", {"workspace": "/p", "window": None}, req=7) == line
    assert error_response(ErrorCode.NOT_FOUND, "no")["error"] == {
        "code": "not_found",
        "message": "no",
    }
