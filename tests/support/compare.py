"""Comparing the daemon's responses with the reference's, field by field."""

from __future__ import annotations

from typing import Any

from tests.support.reference import HEADER_KEYS, SESSION_KEYS


def assert_header(actual: Any, expected: dict[str, Any]) -> None:
    """A header holds at least the reference's fields, each equal (docs/protocol.md §6)."""
    assert isinstance(actual, dict), actual
    missing = [k for k in HEADER_KEYS if k not in actual]
    assert not missing, f"header lacks {missing}: {actual}"
    got = {k: actual[k] for k in HEADER_KEYS}
    assert got == expected, f"header differs for {expected['path']}"


def assert_answer(actual: dict[str, Any], expected: dict[str, Any], source: str = "daemon") -> None:
    """A resume/get response equals the reference's body, field by field."""
    assert actual.get("ok") is True, actual
    assert actual.get("source") == source, actual.get("source")
    assert actual["session_id"] == expected["session_id"]
    assert actual["path"] == expected["path"]
    assert_header(actual["header"], expected["header"])
    if "session" in expected:
        session = actual["session"]
        assert list(session) == list(SESSION_KEYS), list(session)
        for key in SESSION_KEYS:
            assert session[key] == expected["session"][key], f"session.{key} differs"
        assert actual["dropped"] == expected["dropped"]
        assert actual["file_bytes"] == expected["file_bytes"]
    else:
        assert "session" not in actual and "dropped" not in actual


def assert_listing(
    actual: dict[str, Any], expected: dict[str, Any], source: str = "daemon"
) -> None:
    assert actual.get("ok") is True, actual
    assert actual.get("source") == source, actual.get("source")
    assert actual["total"] == expected["total"]
    got = [h["path"] for h in actual["sessions"]]
    want = [h["path"] for h in expected["sessions"]]
    assert got == want, "listing order or content differs"
    for header, want_header in zip(actual["sessions"], expected["sessions"], strict=True):
        assert_header(header, want_header)
