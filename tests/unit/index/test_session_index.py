"""The in-memory index on its own: fed records, asked questions."""

from __future__ import annotations

import sys

from sessiond.index.records import SessionRecord
from sessiond.index.store import IndexCounts, SessionIndex


def _record(path: str, session_id: str, directory: str | None, mtime_ns: int,
            updated_ns: int = 0) -> SessionRecord:  # fmt: skip
    root, stem = path.rsplit("/", 1)
    stem = stem.removesuffix(".json")
    return SessionRecord(
        folder=sys.intern(root), stem=None if stem == session_id else stem, dev_ino=1, size=10,
        mtime_ns=mtime_ns, session_id=session_id,
        title=None, created="2026-01-01T00:00:00Z", updated="2026-01-01T00:00:00Z",
        updated_ns=updated_ns, directory=directory, agent="build", model=None, message_count=0,
        tool_use_count=0, workspaces=(directory,) if directory else (),
    )  # fmt: skip


def test_resume_prefers_newest_mtime_then_greater_file_name() -> None:
    index = SessionIndex()
    index.upsert(_record("/s/a.json", "a", "/w", 5))
    index.upsert(_record("/s/b.json", "b", "/w", 5))
    index.upsert(_record("/s/c.json", "c", "/w", 4))
    assert index.resume("/w").session_id == "b"
    index.upsert(_record("/s/c.json", "c", "/w", 6))
    assert index.resume("/w").session_id == "c"
    index.remove("/s/c.json")
    assert index.resume("/w").session_id == "b"
    assert index.resume("/other") is None


def test_a_session_that_moves_workspace_leaves_the_old_one() -> None:
    index = SessionIndex()
    index.upsert(_record("/s/a.json", "a", "/w1", 5))
    assert index.resume("/w1").session_id == "a"
    index.upsert(_record("/s/a.json", "a", "/w2", 3))
    assert index.resume("/w1") is None
    assert index.resume("/w2").session_id == "a"


def test_get_needs_the_file_name_to_match_the_id() -> None:
    index = SessionIndex()
    index.upsert(_record("/s/renamed.json", "a", "/w", 5))
    assert index.get("a") is None
    index.upsert(_record("/s/a.json", "a", "/w", 1))
    index.upsert(_record("/t/a.json", "a", "/w", 9))
    assert index.get("a").path == "/t/a.json"
    index.remove("/t/a.json")
    assert index.get("a").path == "/s/a.json"


def test_list_orders_by_updated_instant_and_pages() -> None:
    index = SessionIndex()
    for i in range(5):
        index.upsert(_record(f"/s/{i}.json", str(i), "/w" if i % 2 else "/v", i, updated_ns=10 - i))
    page, total = index.list(None, limit=2, offset=1)
    assert [r.session_id for r in page] == ["1", "2"] and total == 5
    page, total = index.list("/w", limit=10, offset=0)
    assert [r.session_id for r in page] == ["1", "3"] and total == 2
    index.remove("/s/1.json")
    assert [r.session_id for r in index.list("/w", 10, 0)[0]] == ["3"]


def test_counts_and_roots() -> None:
    index = SessionIndex()
    index.upsert(_record("/s/a.json", "a", "/w", 1))
    index.upsert(_record("/t/b.json", "b", None, 1))
    assert index.counts() == IndexCounts(sessions=2, workspaces=1, per_folder={"/s": 1, "/t": 1})
    assert [r.session_id for r in index.remove_folder("/s")] == ["a"]
    assert index.records_under("/s") == []
    seq = index.seq
    index.remove("/nothing")
    assert index.seq == seq


def test_header_cache_round_trip_and_corruption(tmp_path) -> None:
    from sessiond.index import header_cache

    record = _record("/s/a.json", "a", "/w", 7)
    record.dev_ino = (2**63 + 5) << 64 | (2**64 - 1)  # device and inode at their widest
    other = _record("/s/b.json", "not-b", None, 8)  # a file not named after its session
    header_cache.save(str(tmp_path), [record, other])
    loaded, loaded_other = header_cache.load(str(tmp_path))
    assert loaded.version == record.version
    assert loaded.header() == record.header()
    assert loaded.folder is record.folder  # shared again, not one copy per record
    assert loaded_other.path == "/s/b.json" and loaded_other.session_id == "not-b"
    assert loaded_other.header() == other.header()
    (tmp_path / header_cache.CACHE_NAME).write_bytes(b"\x93garbage")
    assert header_cache.load(str(tmp_path)) == []
    assert header_cache.load(str(tmp_path / "missing")) == []


def test_tails_of_pretty_files_stay_on_one_line_and_follow_saves(tmp_path) -> None:
    import json
    import os

    from sessiond.index.decode import decode_session
    from sessiond.index.records import FileVersion
    from sessiond.index.tails import TailCache

    from tests.support.agent_sim import add_turn, new_session

    session = new_session("/w")
    add_turn(session, __import__("random").Random(1), 50)
    path = tmp_path / f"{session['id']}.json"
    path.write_text(json.dumps(session, indent=2, ensure_ascii=False))

    def record() -> SessionRecord:
        data = path.read_bytes()
        version = FileVersion.of(os.stat(path))
        return SessionRecord.from_decoded(str(path), version, decode_session(data))

    cache = TailCache()
    tail = cache.get(record(), 2)
    assert b"\n" not in bytes(tail.session)
    assert json.loads(bytes(tail.session))["messages"] == session["messages"][-2:]
    assert tail.dropped == 2
    assert cache.get(record(), 2) is tail  # same version: served from memory
    session["title"] = "renamed"
    path.write_text(json.dumps(session))
    os.utime(path, ns=(1, 1))
    assert json.loads(bytes(cache.get(record(), 2).session))["title"] == "renamed"


TIMES = [
    "2026-08-01T14:00:00Z",  # the agent's form: kept as a number
    "2026-08-01T14:02:07.500Z",
    "2026-08-01T14:02:07.123456Z",
    "2026-08-01T14:02:07.123456789Z",
    "1969-12-31T23:59:59.999999999Z",  # before the epoch
    "0001-01-01T00:00:00Z",
    "2026-08-01T14:02:07.5Z",  # other forms: kept as written
    "2026-08-01T14:02:07.500000Z",
    "2026-08-01T14:02:07.000Z",
    "2026-08-01T16:02:07+02:00",
    "2026-08-01t14:02:07z",
    "2026-08-01 14:02:07Z",
    "2016-12-31T23:59:60Z",  # a leap second
]


def test_times_read_back_exactly_as_written_and_usual_ones_are_kept_as_numbers() -> None:
    from sessiond.index.decode import decode_session
    from sessiond.index.records import FileVersion

    from tests.support.agent_sim import compact, new_session

    for text in TIMES:
        doc = new_session("/w")
        doc["created_at"] = doc["updated_at"] = text
        record = SessionRecord.from_decoded(
            f"/s/{doc['id']}.json", FileVersion(1, 2, 3, 4), decode_session(compact(doc))
        )
        assert (record.created_at, record.updated_at) == (text, text)
        assert record.header()["created_at"] == record.header()["updated_at"] == text
        usual = text.endswith("Z") and "T" in text and text in TIMES[:6]
        assert isinstance(record.created, int) is usual
        assert (record.updated is None) is usual


def test_encoded_headers_follow_each_save_and_stay_bounded() -> None:
    import json

    from sessiond.index import records

    index = SessionIndex()
    first = _record("/s/a.json", "a", "/w", 5)
    index.upsert(first)
    assert json.loads(bytes(index.resume("/w").header_json()))["mtime_ns"] == 5
    saved = _record("/s/a.json", "a", "/w", 6)  # the same file saved again: a new record
    index.upsert(saved)
    assert json.loads(bytes(index.resume("/w").header_json()))["mtime_ns"] == 6
    assert first.header_json() is first.header_json()  # kept, until pushed out
    for n in range(records.HEADER_MEMO_SIZE + 10):
        _record(f"/s/{n}.json", str(n), "/w", n).header_json()
    assert len(records._headers) == records.HEADER_MEMO_SIZE
    assert first not in records._headers
