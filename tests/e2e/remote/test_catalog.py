"""The machine catalog against moto's server over HTTP: coalesced writes, what a restart starts
from, and two machines with one name kept apart (docs/remote.md, "Catalog")."""

from __future__ import annotations

import uuid

from sessiond.remote import layout
from sessiond.remote.catalog import CatalogEntry, CatalogKeeper, ObjectRef, decode_catalog, gunzip
from sessiond.remote.reader import read_catalogs
from sessiond.sink import s3

from tests.support.s3server import LogLines, S3Server, sink_config


def _entry(number: int) -> CatalogEntry:
    ref = ObjectRef(f"k{number}", 1, "0" * 32)
    return CatalogEntry({"id": f"s{number}"}, number, {layout.HEAD: ref}, True, (1, 2, number))


def _keeper(tmp: str, server: S3Server, bucket: str, machine: str) -> tuple[CatalogKeeper, object]:
    config = sink_config(server, bucket, catalog_interval_s=30.0)
    keeper = CatalogKeeper(config, machine, uuid.uuid4().hex, tmp, config.catalog_interval_s)
    return keeper, config


def test_many_changes_make_one_write_and_a_restart_starts_from_it(
    tmp_path, s3_server: S3Server, s3_bucket: str
) -> None:
    keeper, config = _keeper(str(tmp_path), s3_server, s3_bucket, "laptop")
    client = s3.make_client(config)
    keeper.start(client, [])
    assert keeper.flush(30)
    writes = keeper.status().writes
    for number in range(200):
        keeper.update(f"s{number}", _entry(number))
    assert keeper.status().writes == writes  # 30 s interval: nothing yet
    assert keeper.flush(30)
    assert keeper.status().writes == writes + 1
    stored = decode_catalog(gunzip(s3_server.get(s3_bucket, keeper.key)))
    assert len(stored.sessions) == 200 and stored.machine == "laptop"
    keeper.stop(5)

    again = CatalogKeeper(config, "laptop", keeper.instance, str(tmp_path), 30.0)
    again.load()
    again.start(client, [f"s{n}" for n in range(150)])  # 50 sessions are gone since
    assert again.flush(30)
    stored = decode_catalog(gunzip(s3_server.get(s3_bucket, keeper.key)))
    assert sorted(stored.sessions) == sorted(f"s{n}" for n in range(150))
    again.stop(5)


def test_two_machines_with_one_name_are_kept_apart(
    tmp_path, s3_server: S3Server, s3_bucket: str, sink_log: LogLines
) -> None:
    first, config = _keeper(str(tmp_path / "a"), s3_server, s3_bucket, "twin")
    second, _ = _keeper(str(tmp_path / "b"), s3_server, s3_bucket, "twin")
    client = s3.make_client(config)
    first.start(client, [])
    first.update("s1", _entry(1))
    assert first.flush(30)
    second.start(client, [])
    second.update("s2", _entry(2))
    assert second.flush(30)
    assert second.status().shared_with == [first.instance]
    shared = sink_log.events("machine_name_shared")
    assert shared and shared[0]["others"] == [first.instance]
    catalogs = read_catalogs(client, config)
    assert sorted((c.instance, sorted(c.sessions)) for c in catalogs.found) == sorted(
        [(first.instance, ["s1"]), (second.instance, ["s2"])]
    )
    first.stop(5)
    second.stop(5)
