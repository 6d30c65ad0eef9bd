"""The pure parts of sessiond.agentfiles: both formats, the choice rules, files, doctor."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from sessiond.agentfiles import doctor_problems, files, formats
from sessiond.agentfiles import listing_cache as cache_rules
from sessiond.agentfiles import workspace_index as index_rules
from sessiond.agentfiles.workspace_index import Changes
from sessiond.index.decode import decode_session
from sessiond.index.records import FileVersion, SessionRecord

from tests.support.agent_sim import AgentSim, compact, new_session

# --- formats ---------------------------------------------------------------------------------


def test_encode_is_compact_sorted_and_raw_utf8() -> None:
    data = formats.encode({'/w/é"x': "b", "/a": "a\u0001"})
    assert data == '{"entries":{"/a":"a\\u0001","/w/é\\"x":"b"}}'.encode()


@pytest.mark.parametrize(
    ("data", "entries"),
    [
        (b'{"entries":{"/a":"x"}}', {"/a": "x"}),
        (b'{"entries":{},"other":1}', {}),  # serde ignores unknown fields
        (b"{}", None),  # `entries` has no default in WorkspaceIndex
        (b'{"entries":{"/a":1}}', None),
        (b'{"entries":[]}', None),
        (b'{"entries":{"/a":"x"}', None),
        (b'{"entries":{},"entries":{}}', None),
        (b"\xff", None),
        (b"", None),
    ],
)
def test_parse_index(data: bytes, entries: dict[str, str] | None) -> None:
    assert formats.parse_index(data) == entries


def _entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "mtime_ns": 1,
        "size": 2,
        "summary": {
            "id": "s",
            "title": None,
            "created_at": "2026-08-01T14:00:00Z",
            "updated_at": "2026-08-01T14:00:00Z",
            "message_count": 0,
            "agent": "build",
            "directory": "/w",
        },
    }
    for key, value in changes.items():
        if key in entry:
            entry[key] = value
        else:
            entry["summary"][key] = value
    return entry


@pytest.mark.parametrize(
    ("entry", "valid"),
    [
        (_entry(), True),
        (_entry(mtime_ns=(1 << 128) - 1), True),
        (_entry(mtime_ns=1 << 128), False),
        (_entry(mtime_ns=-1), False),
        (_entry(mtime_ns=1.0), False),
        (_entry(size=True), False),
        (_entry(created_at="yesterday"), False),
        (_entry(message_count=None), False),
        (_entry(title=3), False),
        (_entry(directory=None), True),
        ({"mtime_ns": 1, "size": 2}, False),
    ],
)
def test_valid_cache_entry(entry: Any, valid: bool) -> None:
    assert formats.valid_cache_entry(entry) is valid


def test_parse_cache() -> None:
    good = {"/f/a.json": _entry()}
    assert formats.parse_cache(json.dumps({"entries": good}).encode()) == good
    assert formats.parse_cache(b"{}") == {}  # `entries` has a serde default here
    assert formats.parse_cache(b'{"entries":[]}') is None
    assert formats.parse_cache(b'{"entries":{"/f/a.json":NaN}}') is None
    # Entries are checked where they matter: one bad entry makes the agent read nothing, so
    # it is never kept, and the file is rewritten (see test_cache_desired_entries).
    assert formats.parse_cache(b'{"entries":{"/f/a.json":7}}') == {"/f/a.json": 7}


def test_lossy_and_utf8() -> None:
    raw = os.fsdecode(b"/tmp/caf\xe9")
    assert formats.lossy(raw) == "/tmp/caf\ufffd"
    assert not formats.is_utf8(raw)
    assert formats.is_utf8("/tmp/café")


# --- records for the rules ------------------------------------------------------------------


def record(
    folder: str,
    name: str,
    directory: str | None,
    mtime_ns: int,
    **session_fields: Any,
) -> SessionRecord:
    doc = new_session(directory, session_id=name.removesuffix(".json"))
    doc.update(session_fields)
    data = compact(doc)
    version = FileVersion(1, hash(name) & 0xFFFF, len(data), mtime_ns)
    return SessionRecord.from_decoded(os.path.join(folder, name), version, decode_session(data))


def test_winner_is_newest_mtime_then_greater_name() -> None:
    records = [
        record("/f", "a.json", "/w1", 10),
        record("/f", "b.json", "/w1", 30),
        record("/f", "c.json", "/w1", 30),  # same mtime: the greater name wins
        record("/f", "d.json", "/w2", 5),
        record("/f", "e.json", None, 99),  # no directory, no workspace
    ]
    assert index_rules.winners(records, lambda d: d) == {"/w1": "c", "/w2": "d"}


def test_winner_is_named_by_its_file_not_its_id() -> None:
    # The fast path opens `<value>.json`: a file whose content has another id is named by
    # its file name, so the agent loads the file its scan would have chosen.
    records = [record("/f", "copy.json", "/w", 1, id="original")]
    assert index_rules.winners(records, lambda d: d) == {"/w": "copy"}


def test_winners_group_directories_by_canonical_key(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    records = [
        record("/f", "a.json", str(real), 2),
        record("/f", "b.json", str(tmp_path / "link"), 1),
        record("/f", "c.json", str(real) + "/", 0),
    ]
    assert index_rules.winners(records) == {str(real): "a"}


def test_desired_keeps_right_and_unknown_entries_drops_proven_wrong() -> None:
    chosen = {"/w1": "new", "/w2": "only"}
    current = {
        "/w1": "old",  # not the newest: repaired
        "/w2": "only",  # right: kept
        "/gone": "deleted",  # file gone, no session of /gone here: dropped
        "/other": "only",  # a session here, of another workspace: dropped
        "/later": "unread",  # exists, not indexed (yet): kept
        "/escape": "../x",  # not a file name in this folder: dropped
        "/side": "x.checkpoint",  # names a checkpoint, no session: dropped
    }
    on_disk = {"unread", "x.checkpoint", "../x", "only", "new", "old"}
    wanted = index_rules.desired(chosen, current, {"new", "old", "only"}, on_disk.__contains__)
    assert wanted == {"/w1": "new", "/w2": "only", "/later": "unread"}
    changes = Changes.between(current, wanted)
    assert (changes.added, changes.repaired, changes.dropped) == (0, 1, 4)


def test_changes_count_added() -> None:
    changes = Changes.between({}, {"/a": "x"})
    assert (changes.added, changes.repaired, changes.dropped) == (1, 0, 0)


# --- the listing cache rules ------------------------------------------------------------------


def test_cache_entry_is_the_agents_summary() -> None:
    rec = record(
        "/f",
        "s.json",
        "/w//x/",
        7,
        title="t",
        created_at="2026-08-01T16:00:00.5+02:00",
        updated_at="2026-08-01T14:00:00.000000Z",
        agent="explore",
    )
    assert formats.cache_entry(rec) == {
        "mtime_ns": 7,
        "size": rec.version.size,
        "summary": {
            "id": "s",
            "title": "t",
            "created_at": "2026-08-01T14:00:00.500Z",
            "updated_at": "2026-08-01T14:00:00Z",
            "message_count": 0,
            "agent": "explore",
            "directory": "/w//x/",  # as written
        },
    }
    assert formats.cache_entry(record("/f", "old.json", "/w", -1)) is None  # before 1970


def test_cache_desired_entries(tmp_path: Path) -> None:
    folder = str(tmp_path)
    for name in ("listable.json", "changed.json", "x.checkpoint.json", "bad.json"):
        (tmp_path / name).write_text("{}")
    os.utime(tmp_path / "listable.json", ns=(5, 5))
    os.utime(tmp_path / "bad.json", ns=(5, 5))
    indexed = record(folder, "a.json", "/w", 3)
    current = {
        f"{folder}/a.json": _entry(mtime_ns=1),  # stale version of an indexed file
        f"{folder}/listable.json": _entry(mtime_ns=5, size=2),  # agent's, still matches
        f"{folder}/bad.json": _entry(mtime_ns=5, size=2, created_at="soon"),  # unreadable
        f"{folder}/changed.json": _entry(mtime_ns=5, size=2),  # agent's, file changed since
        f"{folder}/gone.json": _entry(),  # file gone
        f"{folder}/x.checkpoint.json": _entry(mtime_ns=5, size=2),  # no session file
        "/elsewhere/b.json": _entry(),  # another folder's key
    }
    wanted = cache_rules.Planner()(folder, [indexed], current)
    assert wanted == {
        f"{folder}/a.json": formats.cache_entry(indexed),
        f"{folder}/listable.json": current[f"{folder}/listable.json"],
    }


def test_cache_keys_keep_the_agents_spelling_of_the_folder(tmp_path: Path) -> None:
    real = tmp_path / "data"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    link = str(tmp_path / "link")
    assert cache_rules.key_folder(str(real), []) == str(real)
    assert cache_rules.key_folder(str(real), [f"{link}/a.json", f"{link}/b.json"]) == link
    mixed = [f"{link}/a.json", f"{real}/b.json"]
    assert cache_rules.key_folder(str(real), mixed) == str(real)
    assert cache_rules.key_folder(str(real), ["/unrelated/a.json"]) == str(real)
    assert cache_rules.key_folder(str(real), ["rel/a.json"]) == str(real)


# --- files and doctor ---------------------------------------------------------------------------


def test_replace_uses_own_temp_name_and_leaves_nothing(tmp_path: Path) -> None:
    folder = str(tmp_path)
    assert files.tmp_path(folder, ".workspace_index.json").endswith(
        f"/.sessiond-tmp-workspace_index.json-{os.getpid()}"
    )
    written = files.replace(folder, ".workspace_index.json", b'{"entries":{}}')
    assert files.file_version(str(tmp_path / ".workspace_index.json")) == written
    assert sorted(os.listdir(folder)) == [".workspace_index.json"]
    digest = files.digest(b'{"entries":{}}')
    assert files.is_unchanged(str(tmp_path / ".workspace_index.json"), written, digest)


def test_replace_failure_cleans_up(tmp_path: Path) -> None:
    (tmp_path / ".listing_cache.json").mkdir()
    (tmp_path / ".listing_cache.json" / "x").write_text("")  # a non-empty folder in the way
    with pytest.raises(OSError):
        files.replace(str(tmp_path), ".listing_cache.json", b"{}")
    assert sorted(os.listdir(tmp_path)) == [".listing_cache.json"]
    problems = doctor_problems([str(tmp_path)], workspace_index=True, listing_cache=True)
    assert problems == [
        f"{tmp_path}/.listing_cache.json is not a file, so sessiond cannot keep it true; remove it"
    ]
    assert doctor_problems([str(tmp_path)], workspace_index=True, listing_cache=False) == []


def test_sim_index_matches_our_encoding(tmp_path: Path) -> None:
    # The agent's own upsert (as simulated) and ours agree on the bytes of one entry.
    sim = AgentSim(global_root=str(tmp_path / "g"), write_pointer=False, write_journal=False)
    session = new_session(str(tmp_path))
    sim.save(str(tmp_path / "s"), session)
    data = (tmp_path / "s" / ".workspace_index.json").read_bytes()
    assert data == formats.encode({str(tmp_path): session["id"]})


def test_lone_surrogates_are_what_serde_refuses() -> None:
    assert formats.parse_index(b'{"entries":{"/a":"\\ud800"}}') is None
    assert formats.parse_index(b'{"entries":{"/a":"\\ud83d\\ude00"}}') == {"/a": "\U0001f600"}
    assert not formats.valid_cache_entry(_entry(title="\ud800"))


def test_replace_keeps_the_mode_of_the_file_it_replaces(tmp_path: Path) -> None:
    target = tmp_path / ".listing_cache.json"
    target.write_text("{}")
    target.chmod(0o640)
    files.replace(str(tmp_path), ".listing_cache.json", b'{"entries":{}}')
    assert target.stat().st_mode & 0o777 == 0o640
