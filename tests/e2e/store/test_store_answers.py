"""Database sessions are answered like file sessions, as the agent that wrote the folder would
answer (docs/storage.md): the daemon and the fallback scan equal a reference computed from the
rows, over pure-database, pure-file and mixed folders."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sessionctl import DaemonError, scan

from tests.support.agent_sim import compact
from tests.support.compare import assert_answer, assert_listing
from tests.support.daemon import DaemonFactory, DaemonProcess, finish_all
from tests.support.reference import Ambiguous
from tests.support.store_corpus import StoreCorpus, build_store_corpus, sid
from tests.support.store_reference import StoreSnapshot

WINDOWS = (None, 0, 1, 3, 10**6)


@pytest.fixture(scope="module")
def store_corpus(tmp_path_factory: pytest.TempPathFactory) -> StoreCorpus:
    return build_store_corpus(os.path.realpath(tmp_path_factory.mktemp("store-corpus")))


@pytest.fixture(scope="module")
def store_daemon(
    store_corpus: StoreCorpus, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(
        os.path.realpath(tmp_path_factory.mktemp("store-daemon")), env_base=store_corpus.base
    )
    try:
        yield daemon.start()
    finally:
        finish_all([daemon])


def snapshot(corpus: StoreCorpus) -> StoreSnapshot:
    return StoreSnapshot(corpus.folders.values())


def workspaces(corpus: StoreCorpus) -> list[str]:
    return [*corpus.workspaces.values(), corpus.linked]


def test_the_reference_gives_the_answers_the_corpus_was_built_for(
    store_corpus: StoreCorpus,
) -> None:
    reference = snapshot(store_corpus)
    for workspace, expected in store_corpus.expected_resume.items():
        found = reference.resume(workspace)
        assert found is not None and found["session_id"] == expected, workspace
    # Each session once: the row of the migration in flight, not also its legacy file.
    assert sorted(s.doc["id"] for s in reference.sessions) == store_corpus.ids()
    # The rows hold what was saved (the transcript as JSON, the directory as written).
    for session in reference.sessions:
        saved = store_corpus.sessions[session.doc["id"]]
        assert session.doc["messages"] == saved["messages"]
        assert session.doc["tool_uses"] == saved["tool_uses"]


def test_resume_equals_the_reference(
    store_corpus: StoreCorpus, store_daemon: DaemonProcess
) -> None:
    reference = snapshot(store_corpus)
    with store_daemon.client() as client:
        for workspace in workspaces(store_corpus):
            for window in WINDOWS:
                expected = reference.resume(workspace, window)
                assert expected is not None
                assert_answer(client.resume(workspace, window=window), expected)


def test_get_equals_the_reference(store_corpus: StoreCorpus, store_daemon: DaemonProcess) -> None:
    reference = snapshot(store_corpus)
    with store_daemon.client() as client:
        for session_id in store_corpus.ids():
            for window in WINDOWS:
                expected = reference.get(session_id, window)
                assert expected is not None, session_id
                assert_answer(client.get(session_id, window=window), expected)
        with pytest.raises(DaemonError) as caught:
            client.get(sid("zz"))
        assert caught.value.code == "not_found"


def test_list_equals_the_reference(store_corpus: StoreCorpus, store_daemon: DaemonProcess) -> None:
    reference = snapshot(store_corpus)
    with store_daemon.client() as client:
        for workspace in [None, *workspaces(store_corpus)]:
            try:
                expected = reference.list(workspace)
            except Ambiguous:  # ties on updated_at: the contract leaves that order open
                expected = None
            actual = client.list(workspace)
            if expected is not None:
                assert_listing(actual, expected)
            else:
                pool = [s for s in reference.sessions]
                want = {h["path"] for h in reference_headers(reference, workspace, pool)}
                assert {h["path"] for h in actual["sessions"]} == want


def reference_headers(reference: StoreSnapshot, workspace: str | None, pool: list) -> list:
    from tests.support.reference import belongs_to, header

    return [header(s) for s in pool if workspace is None or belongs_to(s, workspace)]


def test_the_fallback_scan_gives_the_daemons_answers(
    store_corpus: StoreCorpus, store_daemon: DaemonProcess
) -> None:
    env = store_daemon.env
    with store_daemon.client() as client:
        for workspace in workspaces(store_corpus):
            for window in WINDOWS:
                from_daemon = client.resume(workspace, window=window)
                from_scan = scan.scan_resume(workspace, window, env)
                assert {**from_scan, "source": "daemon"} == from_daemon, (workspace, window)
            listed = client.list(workspace)
            scanned = scan.scan_list(workspace, env=env)
            assert {**scanned, "source": "daemon"} == listed, workspace
        for session_id in store_corpus.ids():
            for window in (None, 1, 10**6):
                from_daemon = client.get(session_id, window=window)
                from_scan = scan.scan_get(session_id, window, store_corpus.workspaces["mixed"], env)
                assert {**from_scan, "source": "daemon"} == from_daemon, session_id


def test_the_status_reports_each_database(
    store_corpus: StoreCorpus, store_daemon: DaemonProcess
) -> None:
    with store_daemon.client() as client:
        status = client.status()
    stores = {s["path"]: s for s in status["databases"]["stores"]}
    for name in ("dbonly", "mixed"):
        entry = stores[os.path.join(store_corpus.folders[name], "sessions.sqlite3")]
        assert entry["state"] == "ok" and entry["error"] is None
    assert status["databases"]["dangling_locators"] == 0
    assert status["sessions"] == len(store_corpus.ids())


def _digest(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def test_the_database_is_left_byte_for_byte_as_it_was(
    tmp_path: Path, daemons: DaemonFactory
) -> None:
    corpus = build_store_corpus(os.path.realpath(tmp_path / "corpus"))
    folders = list(corpus.folders.values())
    before = {
        folder: {name: _digest(os.path.join(folder, name)) for name in os.listdir(folder)}
        for folder in folders
    }
    daemon = daemons(env_base=corpus.base).start()
    with daemon.client() as client:
        for workspace in workspaces(corpus):
            client.resume(workspace, window=3)
        client.rescan()
        client.sync()
    assert daemon.stop() == 0
    for folder in folders:
        after = {name: _digest(os.path.join(folder, name)) for name in os.listdir(folder)}
        # SQLite itself creates -wal and -shm for a read-only connection to a WAL database when
        # they are missing (and leaves them): the only difference allowed. The agent's own
        # sidecars are sessiond's to keep true (README, "The agent's own index files").
        allowed = {"sessions.sqlite3-wal", "sessions.sqlite3-shm", ".listing_cache.json",
                   ".workspace_index.json"}  # fmt: skip
        assert {k: v for k, v in after.items() if k not in allowed} == {
            k: v for k, v in before[folder].items() if k not in allowed
        }, folder
        if "sessions.sqlite3" in before[folder]:
            assert after["sessions.sqlite3"] == before[folder]["sessions.sqlite3"]


def test_a_database_session_comes_back_as_its_legacy_bytes(
    store_corpus: StoreCorpus, store_daemon: DaemonProcess
) -> None:
    """`export_json` goes through the typed struct: the whole object, re-encoded compactly, is
    what a legacy file of the session would hold (metadata in struct order, not sorted)."""
    rows = {i for store in store_corpus.stores.values() for i in store.saved_ids()}
    assert len(rows) >= 8
    with store_daemon.client() as client:
        for session_id in sorted(rows):
            saved = store_corpus.sessions[session_id]
            answer = client.get(session_id, window=10**6)
            assert compact(answer["session"]) == compact(saved), session_id
            folder = store_corpus.workspaces["mixed"]
            scanned = scan.scan_get(session_id, 10**6, folder, store_daemon.env)
            assert compact(scanned["session"]) == compact(saved), session_id
