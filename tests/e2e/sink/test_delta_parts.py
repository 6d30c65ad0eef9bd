"""Delta uploads' parts without the daemon: part ranges, the composite ETag, the prefix check,
the ledger's new fields and open uploads; and the delta itself against moto for a history
that grew by more than one part."""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from pathlib import Path

import pytest
from sessiond.config import ConfigError, s3_settings
from sessiond.index.records import FileVersion
from sessiond.sink import s3
from sessiond.sink.config import MIN_PART_SIZE, SinkConfig
from sessiond.sink.delta import (
    MAX_PART_SIZE,
    DeltaRefused,
    composite_etag,
    copy_ranges,
    eligible,
    tail_ranges,
    upload_delta,
)
from sessiond.sink.history import History, fingerprint
from sessiond.sink.ledger import Ledger, LedgerEntry
from sessiond.sink.verify import StoreCheck

from tests.support.s3server import S3Server, sink_config

MIB = 1 << 20


def entry(body: bytes, etag: str) -> LedgerEntry:
    return LedgerEntry(fingerprint(body), len(body), 1, 2, 3, 0.0, etag=etag, md5_etags=True)


def test_copy_ranges_cover_the_object_in_parts_of_at_most_5_gib() -> None:
    assert copy_ranges(6 * MIB) == [(0, 6 * MIB - 1)]
    assert copy_ranges(MAX_PART_SIZE) == [(0, MAX_PART_SIZE - 1)]
    size = 12 * 1024**3 + 7
    ranges = copy_ranges(size)
    assert len(ranges) == 3 and ranges[0][0] == 0 and ranges[-1][1] == size - 1
    assert all(b + 1 == c for (_, b), (c, _) in itertools.pairwise(ranges))
    assert all(MIN_PART_SIZE <= last - first + 1 <= MAX_PART_SIZE for first, last in ranges)


def test_tail_ranges_only_the_last_part_is_small() -> None:
    assert tail_ranges(10, 20, 16) == [(10, 20)]
    assert tail_ranges(0, 40, 16) == [(0, 16), (16, 32), (32, 40)]


def test_composite_etag_is_s3s_rule() -> None:
    parts = [b"a" * 10, b"b" * 3]
    etags = [f'"{hashlib.md5(p).hexdigest()}"' for p in parts]
    combined = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    assert composite_etag(etags) == f'"{combined}-2"'
    assert composite_etag(['"not-hex"', etags[0]]) is None


def test_the_prefix_check_and_the_fingerprint_come_from_one_pass() -> None:
    old = b'{"role":"user"}\n' * 1000
    new = History(old + b'{"role":"assistant"}\n', FileVersion(0, 1, 2, 3), 1001, False)
    assert new.starts_with(len(old), fingerprint(old))
    assert new.fingerprint == hashlib.md5(new.body).hexdigest()
    edited = History(b"X" + old[1:] + b"\n", FileVersion(0, 1, 2, 3), 1000, False)
    assert not edited.starts_with(len(old), fingerprint(old))
    assert not new.starts_with(len(new.body) + 1, fingerprint(old))


def test_eligible_needs_a_known_etag_and_5_mib() -> None:
    big = b"x" * MIN_PART_SIZE
    assert eligible(entry(big, '"e"'), len(big) + 1)
    assert not eligible(entry(big, ""), len(big) + 1)  # an entry from before deltas
    assert not eligible(entry(big[:-1], '"e"'), len(big) + 1)  # under 5 MiB
    assert not eligible(entry(big, '"e"'), len(big))  # did not grow
    assert not eligible(None, len(big))


def test_a_ledger_from_before_deltas_still_loads(tmp_path: Path) -> None:
    old = {
        "format": "sessiond-upload-ledger",
        "version": 1,
        "target": "t",
        "entries": {"s1": {"fp": "ab", "bytes": 3, "ino": 1, "size": 2, "mtime_ns": 3, "at": 0}},
    }
    Path(tmp_path, "uploads.ledger").write_text(json.dumps(old))
    ledger = Ledger(str(tmp_path), "t")
    ledger.load()
    loaded = ledger.get("s1")
    assert loaded is not None and (loaded.etag, loaded.messages) == ("", -1)
    assert ledger.open_uploads() == []


def test_open_uploads_are_on_disk_at_once(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path), "t")
    ledger.open_upload("u1", "k1")
    again = Ledger(str(tmp_path), "t")  # as a daemon restarted after a SIGKILL would
    again.load()
    assert again.open_uploads() == [("u1", "k1")] and again.open_uploads("k2") == []
    again.close_upload("u1")
    assert again.open_uploads() == []


def test_a_delta_of_several_new_parts(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    config = sink_config(s3_server, s3_bucket, multipart_chunksize=5 * MIB)
    client, ledger = s3.make_client(config), Ledger(str(tmp_path), "t")
    old = bytes(range(256)) * (6 * MIB // 256)
    put = s3.put_history(client, config, "k", old)
    new = old + b"n" * (11 * MIB)  # three new parts: 5 + 5 + 1 MiB

    done = upload_delta(client, config, ledger, "k", new, entry(old, put.etag))

    assert (done.parts, done.sent, done.copied, done.md5_etags) == (4, 11 * MIB, len(old), True)
    assert s3_server.get(s3_bucket, "k") == new
    assert s3_server.head(s3_bucket, "k")["ETag"] == done.etag
    assert ledger.open_uploads() == []
    stale = entry(old, put.etag)  # the object has changed since: refused before any part
    try:
        upload_delta(client, config, ledger, "k", new + b"m", stale)
    except DeltaRefused as exc:
        assert "replaced" in str(exc)
    else:
        raise AssertionError("a delta on a replaced object was not refused")
    assert not client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


def test_delta_uploads_can_be_turned_off_in_the_config() -> None:
    env = {
        "CODETETHER_HISTORY_S3_ENDPOINT": "http://127.0.0.1:9",
        "CODETETHER_HISTORY_S3_BUCKET": "b",
        "CODETETHER_HISTORY_S3_ACCESS_KEY": "a",
        "CODETETHER_HISTORY_S3_SECRET_KEY": "s",
    }
    on = SinkConfig.from_env(env)
    off = SinkConfig.from_env(env, s3_settings({"delta_uploads": False}))
    assert on is not None and on.delta_uploads and off is not None and not off.delta_uploads
    with pytest.raises(ConfigError, match=r"s3\.delta_uploads: must be true or false, got 1"):
        s3_settings({"delta_uploads": 1})


def test_the_check_at_start_is_batched_and_rate_limited(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """24 objects at 40 HEADs a second in batches of 4: six batches, at least 0.125 s apart."""
    config = sink_config(s3_server, s3_bucket)
    client, ledger = s3.make_client(config), Ledger(str(tmp_path), "t")
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(24)]
    for session_id in ids:
        body = session_id.encode() + b"\n"
        put = s3.put_history(client, config, config.object_key(session_id), body)
        ledger.record(session_id, entry(body, put.etag))
    client.delete_object(Bucket=s3_bucket, Key=config.object_key(ids[5]))
    queued: list[str] = []
    check = StoreCheck(client, config, ledger, queued.append, lambda: False, rate=40, batch=4)

    started = time.monotonic()
    check.start(ids)
    assert check.done.wait(30)
    elapsed = time.monotonic() - started

    assert elapsed >= 5 * 4 / 40  # the first batch goes at once, each later one waits its turn
    assert (queued, check.replaced, check.unverified) == ([ids[5]], 1, 0)
    assert ledger.get(ids[5]) is None and ledger.get(ids[4]) is not None
