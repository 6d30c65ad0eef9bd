"""The pieces of remote restore that need no store: cutting a session file into its parts and
splicing it back (byte for byte for a compact file), the directory swap, the catalog format,
the two ops' request fields and the CLI's lazy import (docs/remote.md)."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from sessionctl.protocol import ErrorCode, ProtocolError, RemoteList, Restore, decode_request
from sessiond.remote import layout
from sessiond.remote.catalog import decode_catalog
from sessiond.remote.split import cut, read_head, splice, with_directory
from sessiond.sink.history import history_body

from tests.support.agent_sim import add_turn, compact, new_session


def _parts(data: bytes) -> tuple[bytes, object, bytes | None, bytes | None]:
    body, _, _ = history_body(data)
    parts = cut(data, body)
    return body, read_head(parts.head), parts.pages, parts.tool_uses


def _session(turns: int = 4) -> dict:
    session = new_session("/home/dev/proj", title='naïve ✓ 日本語 "quoted" / slash')
    rng = random.Random(7)
    for _ in range(turns):
        add_turn(session, rng)
    return session


def test_a_compact_file_splices_back_byte_for_byte() -> None:
    data = compact(_session())
    body, head, pages, tool_uses = _parts(data)
    assert head.exact
    assert splice(head, body, pages, tool_uses) == data
    assert pages is not None and pages.count(b"\n") == len(_session()["pages"])


def test_unknown_keys_and_absent_arrays_keep_their_place() -> None:
    session = _session(1)
    del session["pages"], session["summary_index"]
    session = {"zeta": [1, {"a": "é"}], **session, "extra": None}
    data = compact(session)
    body, head, pages, tool_uses = _parts(data)
    assert head.exact and pages is None
    assert splice(head, body, pages, tool_uses) == data


def test_empty_arrays_and_messages() -> None:
    data = compact(new_session(None))
    body, head, pages, tool_uses = _parts(data)
    assert body == b"" and pages == b"" and tool_uses == b""
    assert splice(head, body, pages, tool_uses) == data


def test_a_pretty_file_splices_back_equal_as_json() -> None:
    session = _session()
    data = json.dumps(session, ensure_ascii=False, indent=2).encode()
    body, head, pages, tool_uses = _parts(data)
    assert not head.exact
    assert json.loads(splice(head, body, pages, tool_uses)) == session


def test_the_directory_is_swapped_and_nothing_else_changes() -> None:
    session = _session()
    data = compact(session)
    body, head, pages, tool_uses = _parts(data)
    moved = json.loads(json.dumps(session))
    moved["metadata"]["directory"] = '/srv/ünïcode "dir"'
    assert splice(head, body, pages, tool_uses, directory='/srv/ünïcode "dir"') == compact(moved)
    assert with_directory(b'{"model":"x"}', "/a") == b'{"directory":"/a","model":"x"}'


def test_a_torn_file_cannot_be_cut() -> None:
    data = compact(_session())
    body, _, _ = history_body(data)
    with pytest.raises(ValueError):
        cut(data[:-10], body)


def test_a_catalog_of_another_format_is_refused() -> None:
    with pytest.raises(ValueError):
        decode_catalog(b'{"format":"other","version":1}')
    with pytest.raises(ValueError):
        decode_catalog(b"{")


def test_keys_and_machine_names() -> None:
    assert (
        layout.catalog_key("h/", "desk", "a" * 32)
        == f"h/.sessiond/catalogs/desk/{'a' * 32}.json.gz"
    )
    assert layout.part_key("h/", "s1", "i", layout.HEAD) == "h/s1/sessiond/i/head.json"
    assert layout.valid_machine_name(layout.default_machine_name())
    for bad in ("", ".x", "a/b", "a b", "x" * 64):
        assert not layout.valid_machine_name(bad)


def test_the_two_ops_check_their_fields() -> None:
    request = decode_request({"op": "restore", "id": "abc", "dry_run": True, "machine": "desk"})
    assert request == Restore("abc", machine="desk", dry_run=True)
    listed = decode_request({"op": "remote_list", "workspace": "/w"})
    assert isinstance(listed, RemoteList)
    assert listed.limit == 100 and listed.machine is None
    for bad in (
        {"op": "restore"},
        {"op": "restore", "id": "a/b"},
        {"op": "restore", "id": "a", "machine": "a/b"},
        {"op": "restore", "id": "a", "workspace": "rel"},
        {"op": "remote_list", "machine": ""},
    ):
        with pytest.raises(ProtocolError) as caught:
            decode_request(bad)
        assert caught.value.code == ErrorCode.BAD_REQUEST


def test_the_cli_imports_the_remote_module_only_for_its_commands() -> None:
    code = (
        "import sys; from sessionctl import cli; cli.build_parser(sys.argv[1:]).parse_args("
        "sys.argv[1:]); print('sessionctl.cli_remote' in sys.modules)"
    )
    run = lambda *argv: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert run("list") == "False"
    assert run("restore", "abc", "--dry-run") == "True"
    assert run("remote", "list", "--machine", "desk") == "True"
