"""The typed requests of sessionctl.protocol: one class per op, decoded with every field checked
and encoded back (docs/protocol.md, "Requests and responses" and "Ops")."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sessionctl.protocol import (
    DEFAULT_LIST_LIMIT,
    DEFAULT_SEARCH_LIMIT,
    DEFAULT_WAIT_TIMEOUT_S,
    MAX_WAIT_TIMEOUT_S,
    OPS,
    ErrorCode,
    Flush,
    Get,
    List,
    Ping,
    ProtocolError,
    RemoteList,
    Request,
    Rescan,
    Restore,
    Resume,
    Search,
    Status,
    Sync,
    Watch,
    decode_request,
    encode_request,
)

# Every op with its fields all at their defaults, and once with every field set.
AT_DEFAULTS: list[Request] = [
    Ping(),
    Resume("/w"),
    Get("abc-1"),
    List(),
    Status(),
    Sync(),
    Flush(),
    Rescan(),
    Watch(),
    Search("fix the db"),
    RemoteList(),
    Restore("abc-1"),
]
ALL_SET: list[Request] = [
    Resume("/w", window=3, sync=True),
    Get("sessão_1-é", window=0, sync=True),
    List(workspace="/w", limit=5, offset=7, sync=True),
    Sync(timeout=2.5),
    Flush(timeout=0.25),
    Search("migration fail*", workspace="/w", limit=1, offset=2, sync=True),
    RemoteList(workspace="/w", machine="laptop.1", limit=3, offset=4),
    Restore("abc-1", machine="desk", workspace="/w", dry_run=True),
]


def wire(request: Request, req: Any = None) -> dict[str, Any]:
    line = encode_request(request) if req is None else encode_request(request, req)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    decoded: dict[str, Any] = json.loads(line)
    return decoded


def test_the_table_has_one_class_per_op_of_the_spec() -> None:
    assert set(OPS) == {
        *("ping", "resume", "get", "list", "status", "sync", "flush", "rescan", "watch"),
        *("search", "remote_list", "restore"),
    }
    assert {type(request) for request in AT_DEFAULTS} == set(OPS.values())
    for op, cls in OPS.items():
        assert cls.op == op


@pytest.mark.parametrize("request_", AT_DEFAULTS + ALL_SET, ids=repr)
def test_every_request_round_trips(request_: Request) -> None:
    decoded = decode_request(wire(request_))
    assert type(decoded) is type(request_)
    assert decoded == request_
    assert decoded.fields() == request_.fields()


def test_fields_at_their_default_are_left_off_the_line() -> None:
    assert wire(Ping()) == {"op": "ping"}
    assert wire(Resume("/w")) == {"op": "resume", "workspace": "/w"}
    assert wire(List()) == {"op": "list"}
    assert wire(Sync()) == {"op": "sync"}
    assert wire(Restore("a", dry_run=False)) == {"op": "restore", "id": "a"}
    assert wire(Resume("/w", window=0)) == {"op": "resume", "workspace": "/w", "window": 0}
    assert wire(Sync(timeout=10)) == {"op": "sync", "timeout": 10}  # an int is not the default
    assert wire(Search("q", limit=100, offset=3)) == {
        "op": "search",
        "query": "q",
        "limit": 100,
        "offset": 3,
    }
    assert wire(Ping(), req=[1, "a"]) == {"op": "ping", "req": [1, "a"]}


def test_defaults_fill_what_is_absent_or_null() -> None:
    assert decode_request({"op": "resume", "workspace": "/w", "window": None}).fields() == {
        "workspace": "/w",
        "window": None,
        "sync": False,
    }
    assert decode_request({"op": "list", "sync": None}).fields() == {
        "workspace": None,
        "limit": DEFAULT_LIST_LIMIT,
        "offset": 0,
        "sync": False,
    }
    assert decode_request({"op": "search", "query": "q"}).fields() == {
        "query": "q",
        "workspace": None,
        "limit": DEFAULT_SEARCH_LIMIT,
        "offset": 0,
        "sync": False,
    }
    assert decode_request({"op": "remote_list"}) == RemoteList(limit=DEFAULT_LIST_LIMIT)
    assert decode_request({"op": "restore", "id": "a"}).fields() == {
        "id": "a",
        "machine": None,
        "workspace": None,
        "dry_run": False,
    }
    for op in ("sync", "flush"):
        assert decode_request({"op": op}).fields() == {"timeout": DEFAULT_WAIT_TIMEOUT_S}


def test_seconds_are_floats_capped_at_the_maximum() -> None:
    assert decode_request({"op": "sync", "timeout": 3}).fields() == {"timeout": 3.0}
    assert type(decode_request({"op": "flush", "timeout": 3}).fields()["timeout"]) is float
    for huge in (601, 1e300, 10**400):
        assert decode_request({"op": "sync", "timeout": huge}) == Sync(timeout=MAX_WAIT_TIMEOUT_S)


def test_unknown_fields_and_other_ops_fields_are_ignored() -> None:
    assert decode_request({"op": "ping", "window": "junk", "extra": {"a": 1}}) == Ping()
    assert decode_request({"op": "status", "id": "../x", "req": 5}) == Status()
    assert decode_request({"op": "get", "id": "a", "workspace": 3}) == Get("a")


def refusal(obj: object) -> str:
    with pytest.raises(ProtocolError) as caught:
        decode_request(obj)
    assert caught.value.code is ErrorCode.BAD_REQUEST
    return caught.value.message


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2], "a request must be a JSON object"),
        ("ping", "a request must be a JSON object"),
        ({"req": 5}, "a request needs a string 'op'"),
        ({"op": None}, "a request needs a string 'op'"),
        ({"op": 3}, "a request needs a string 'op'"),
        ({"op": "frobnicate"}, "unknown op 'frobnicate'"),
        ({"op": "Ping"}, "unknown op 'Ping'"),
        ({"op": "x" * 100}, f"unknown op '{'x' * 64}'"),
    ],
)
def test_unusable_envelopes_and_unknown_ops(obj: object, message: str) -> None:
    assert refusal(obj) == message


PATH_ERRORS = [
    ("", "must be a non-empty string"),
    (3, "must be a non-empty string"),
    (["/w"], "must be a non-empty string"),
    ("relative/path", "must be an absolute path"),
    ("/a\x00b", "must not contain NUL"),
]
COUNT_ERRORS = [(-1, ">= 0"), (1.5, ">= 0"), (2.0, ">= 0"), (True, ">= 0"), ("2", ">= 0")]
FLAG_ERRORS = [(1, "true or false"), ("yes", "true or false"), (0, "true or false")]
SECONDS_ERRORS = [
    (0, "must be greater than 0"),
    (-1.5, "must be greater than 0"),
    (float("nan"), "must be a number of seconds"),
    (float("inf"), "must be a number of seconds"),
    (True, "must be a number of seconds"),
    ("5", "must be a number of seconds"),
]
ID_ERRORS = [("../etc", "letters, digits"), ("a" * 129, "letters, digits"), (7, "letters")]
MACHINE_ERRORS = [(v, "must be 1-63 letters") for v in ("", ".x", "a/b", "a b", "x" * 64, 5)]
QUERY_ERRORS = [("", "must be a non-empty string"), ("  ", "non-empty"), (3, "non-empty")]

KIND_ERRORS = {
    "workspace": PATH_ERRORS,
    "window": COUNT_ERRORS,
    "limit": COUNT_ERRORS,
    "offset": COUNT_ERRORS,
    "sync": FLAG_ERRORS,
    "dry_run": FLAG_ERRORS,
    "timeout": SECONDS_ERRORS,
    "id": ID_ERRORS,
    "machine": MACHINE_ERRORS,
    "query": QUERY_ERRORS,
}
VALID = {cls.op: req.fields() for req in AT_DEFAULTS for cls in [type(req)]}
FIELD_CASES = [
    (op, field.name, value, fragment)
    for op, cls in OPS.items()
    for field in cls.FIELDS
    for value, fragment in KIND_ERRORS[field.name]
]


@pytest.mark.parametrize(("op", "name", "value", "fragment"), FIELD_CASES)
def test_every_field_refuses_a_wrong_type_or_value(
    op: str, name: str, value: object, fragment: str
) -> None:
    good = {k: v for k, v in VALID[op].items() if v is not None}
    message = refusal({"op": op, **good, name: value})
    assert message.startswith(f"'{name}' must ") and fragment in message


def test_every_field_of_every_op_has_error_cases() -> None:
    assert {field.name for cls in OPS.values() for field in cls.FIELDS} == set(KIND_ERRORS)


@pytest.mark.parametrize(
    ("op", "name"),
    [("resume", "workspace"), ("get", "id"), ("search", "query"), ("restore", "id")],
)
def test_a_required_field_absent_or_null_is_named(op: str, name: str) -> None:
    assert refusal({"op": op}) == f"op '{op}' needs field '{name}'"
    assert refusal({"op": op, name: None}) == f"op '{op}' needs field '{name}'"


def test_fields_are_checked_in_order_the_first_wrong_one_is_the_error() -> None:
    # The messages clients saw before the requests were typed (docs/protocol.md, "Error codes").
    assert refusal({"op": "resume", "window": -1}) == "op 'resume' needs field 'workspace'"
    assert refusal({"op": "list", "limit": -1, "workspace": "rel"}) == (
        "'workspace' must be an absolute path"
    )
    assert refusal({"op": "restore", "id": "a", "dry_run": 1, "machine": ""}).startswith(
        "'machine' must be 1-63"
    )


def test_limits_at_their_edges_are_accepted() -> None:
    assert decode_request({"op": "get", "id": "a" * 128}) == Get("a" * 128)
    assert decode_request({"op": "remote_list", "machine": "m" * 63}) == RemoteList(
        machine="m" * 63
    )
    assert decode_request({"op": "list", "limit": 10**30, "offset": 0}) == List(limit=10**30)
    assert decode_request({"op": "sync", "timeout": 1e-9}) == Sync(timeout=1e-9)


def test_requests_compare_by_type_and_fields() -> None:
    assert Sync(timeout=1.0) != Flush(timeout=1.0)
    assert Resume("/w") != Resume("/w", sync=True)
    assert repr(Resume("/w", window=2)) == "Resume(workspace='/w', window=2, sync=False)"
    assert repr(Ping()) == "Ping()"
