"""The daemon's msgspec decoder and the client's standard-library validator agree on what a
session file is, what its header says, and what a window of it looks like."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import msgspec
import pytest
from sessionctl.document import InvalidSession, header_of, validate_document
from sessionctl.document import windowed_session as client_window
from sessiond.index.decode import decode_session
from sessiond.index.decode import windowed_session as daemon_window
from sessiond.index.records import FileVersion, SessionRecord

from tests.support.agent_sim import add_turn, compact, new_session
from tests.support.paths import DATA

SAMPLE = str(DATA / "SYNTHETIC-session-b7e1d2c3.json")


def _session(turns: int = 3) -> dict[str, Any]:
    session = new_session("/home/dev/proj", title="t")
    rng = random.Random(turns)
    for _ in range(turns):
        add_turn(session, rng, 60)
    return session


def _mutate(path: str, value: Any) -> dict[str, Any]:
    doc = _session()
    target = doc
    *parents, last = path.split(".")
    for key in parents:
        target = target[key]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return doc


_DELETE = object()

INVALID = [
    ("id", _DELETE),
    ("id", 7),
    ("title", 5),
    ("created_at", "yesterday"),
    ("created_at", "\uff12\uff10\uff12\uff16-08-01T14:00:00Z"),  # full-width digits: chrono refuses
    ("updated_at", _DELETE),
    ("metadata", None),
    ("metadata.shared", _DELETE),
    ("metadata.shared", "no"),
    ("metadata.directory", 3),
    ("metadata.model", ["x"]),
    ("agent", None),
    ("messages", _DELETE),
    ("messages", {}),
    ("tool_uses", _DELETE),
    ("usage", _DELETE),
    ("usage", []),
]

VALID = [
    ("title", _DELETE),
    ("title", None),
    ("metadata.directory", None),
    ("metadata.directory", _DELETE),
    ("pages", _DELETE),
    ("summary_index", _DELETE),
    ("updated_at", "2026-08-01T14:02:07+02:00"),
    ("extra_unknown_key", {"anything": [1, 2]}),
]


@pytest.mark.parametrize(("path", "value"), INVALID)
def test_both_decoders_refuse_the_same_documents(path: str, value: Any) -> None:
    doc = _mutate(path, value)
    with pytest.raises(InvalidSession):
        validate_document(doc)
    with pytest.raises(InvalidSession):
        decode_session(compact(doc))


@pytest.mark.parametrize(("path", "value"), VALID)
def test_both_decoders_accept_the_same_documents(path: str, value: Any) -> None:
    doc = _mutate(path, value)
    validate_document(doc)
    decode_session(compact(doc))


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b"null", b'{"id":"x"', b"\xff\xfe"])
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidSession):
        decode_session(data)


def _daemon_header(data: bytes) -> dict[str, Any]:
    version = FileVersion(1, 2, len(data), 99)
    return SessionRecord.from_decoded("/s/x.json", version, decode_session(data)).header()


@pytest.mark.parametrize("pretty", [False, True])
def test_headers_agree(pretty: bool) -> None:
    doc = _session(5)
    data = json.dumps(doc, indent=2 if pretty else None, ensure_ascii=False).encode()
    assert _daemon_header(data) == header_of(json.loads(data), "/s/x.json", len(data), 99)


def test_sample_file_header() -> None:
    with open(SAMPLE, "rb") as fh:
        data = fh.read()
    header = _daemon_header(data)
    assert header["message_count"] == 4
    assert header["tool_use_count"] == 1
    assert header["updated_at"] == "2026-08-01T14:02:07.500Z"
    assert header == header_of(json.loads(data), "/s/x.json", len(data), 99)


@pytest.mark.parametrize("window", [0, 1, 2, 3, 7, 12, 13, 1000])
@pytest.mark.parametrize("pages_ok", [True, False])
def test_windows_agree(window: int, pages_ok: bool) -> None:
    doc = _session(3)
    doc["messages"].insert(0, {"role": "system", "content": [{"type": "text", "text": "s"}]})
    doc["pages"].insert(0, "bootstrap")
    if not pages_ok:
        doc["pages"] = doc["pages"][:-1]
    data = compact(doc)
    expected, expected_dropped = client_window(copy.deepcopy(doc), window)
    session, dropped = daemon_window(decode_session(data), window)
    assert json.loads(msgspec.json.encode(session)) == expected
    assert dropped == expected_dropped
    kept = min(window, len(doc["messages"]))
    assert len(expected["messages"]) == kept
    assert len(expected["pages"]) == kept
    assert expected_dropped == (len(doc["messages"]) - kept) + max(
        0, len(doc["tool_uses"]) - window
    )
    assert list(expected) == list(json.loads(msgspec.json.encode(session)))
