"""Databases sessiond cannot read, and rows and locators that do not agree (docs/storage.md):
each gets a clear report in `status` and the logs, nothing crashes, and everything else in the
folder is still served; a database that becomes readable again is picked up by the retry."""

from __future__ import annotations

import os
import random
import sqlite3
from typing import Any

import pytest
from sessionctl import DaemonError

from tests.support.agent_sim import AgentSim, add_turn, new_session
from tests.support.agent_store import AgentStore, locator
from tests.support.daemon import DaemonFactory, DaemonProcess, wait_for


class Folder:
    def __init__(self, base: str) -> None:
        self.workspace = os.path.join(base, "proj")
        os.makedirs(os.path.join(self.workspace, ".git"))
        self.path = os.path.join(self.workspace, ".codetether-agent", "sessions")
        os.makedirs(self.path)
        self.db = os.path.join(self.path, "sessions.sqlite3")
        self.sim = AgentSim(os.path.join(base, "global"), write_pointer=False)
        self.rng = random.Random(3)

    def session(self, turns: int = 1) -> dict[str, Any]:
        session = new_session(self.workspace)
        for _ in range(turns):
            add_turn(session, self.rng, 80)
        return session

    def legacy(self) -> dict[str, Any]:
        session = self.session()
        self.sim.save(self.path, session)
        return session

    def daemon(self, daemons: DaemonFactory, *allowed: str) -> DaemonProcess:
        daemon = daemons(sessions_dirs=[self.path], discover=False)
        daemon.allowed_errors.update(allowed)
        return daemon


def store_status(daemon: DaemonProcess) -> dict[str, Any]:
    with daemon.client() as client:
        stores = client.status()["databases"]["stores"]
    assert len(stores) == 1, stores
    return stores[0]


def served_ids(daemon: DaemonProcess) -> set[str]:
    with daemon.client() as client:
        client.sync()
        return {h["id"] for h in client.list(None)["sessions"]}


def test_a_corrupt_database_is_reported_and_the_files_are_served(
    daemons: DaemonFactory, base: str
) -> None:
    folder = Folder(base)
    kept = folder.legacy()
    with open(folder.db, "wb") as fh:
        fh.write(b"this is not an SQLite database, only its name" * 100)
    daemon = folder.daemon(daemons, "store_unreadable").start()
    assert served_ids(daemon) == {kept["id"]}
    status = store_status(daemon)
    assert status["state"] == "failed" and "not a database" in status["error"], status
    (logged,) = daemon.events_named("store_unreadable")
    assert logged["path"] == folder.db
    # The agent replaces it with a good one: the retry (with backoff) serves its rows.
    os.unlink(folder.db)
    row = folder.session()
    AgentStore(folder.path).save(row)
    wait_for(lambda: served_ids(daemon) == {kept["id"], row["id"]}, 60, "the retry")
    assert store_status(daemon)["state"] == "ok"
    assert daemon.events_named("store_readable") or daemon.events_named("store_opened")


def test_a_locked_database_is_retried_until_it_can_be_read(
    daemons: DaemonFactory, base: str
) -> None:
    folder = Folder(base)
    kept = folder.legacy()
    row = folder.session()
    AgentStore(folder.path).save(row)
    holder = sqlite3.connect(folder.db, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")  # no other connection may read now
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE sessions SET revision=revision WHERE 0")
    holder.execute("COMMIT")
    daemon = folder.daemon(daemons, "store_unreadable").start()
    try:
        assert served_ids(daemon) == {kept["id"]}
        status = store_status(daemon)
        assert status["state"] == "failed" and "locked" in status["error"], status
    finally:
        holder.close()
    wait_for(lambda: served_ids(daemon) == {kept["id"], row["id"]}, 60, "the retry")


def test_a_newer_user_version_is_refused(daemons: DaemonFactory, base: str) -> None:
    folder = Folder(base)
    kept = folder.legacy()
    row = folder.session()
    AgentStore(folder.path).save(row)
    conn = sqlite3.connect(folder.db)
    conn.execute("PRAGMA user_version=3")
    conn.close()
    daemon = folder.daemon(daemons, "store_unreadable").start()
    assert served_ids(daemon) == {kept["id"]}
    status = store_status(daemon)
    assert status["state"] == "failed" and "user_version 3" in status["error"], status


def test_locators_and_rows_that_do_not_agree(daemons: DaemonFactory, base: str) -> None:
    folder = Folder(base)
    store = AgentStore(folder.path)
    with_locator, without_locator = folder.session(), folder.session()
    store.save(with_locator)
    store.save(without_locator, publish_locator=False)  # a crash before the locator
    dangling = "dangling-0000-4000-8000-000000000000"
    with open(os.path.join(folder.path, dangling + ".json"), "wb") as fh:
        fh.write(locator(dangling))  # a locator whose row was deleted
    kept = folder.legacy()
    daemon = folder.daemon(daemons).start()
    assert served_ids(daemon) == {with_locator["id"], without_locator["id"], kept["id"]}
    with daemon.client() as client:
        answer = client.get(without_locator["id"], window=10)
        assert answer["session"]["messages"] == without_locator["messages"][-10:]
        with pytest.raises(DaemonError) as caught:
            client.get(dangling)
        assert caught.value.code == "not_found"
        databases = client.status()["databases"]
    assert databases["dangling_locators"] == 1
    assert databases["dangling_examples"] == [os.path.join(folder.path, dangling + ".json")]
    (logged,) = daemon.events_named("store_locator_dangling")
    assert logged["path"].endswith(dangling + ".json")
    assert not daemon.events_named("session_invalid"), "a locator is no malformed file"


def test_a_blob_whose_hash_does_not_match(daemons: DaemonFactory, base: str) -> None:
    folder = Folder(base)
    store = AgentStore(folder.path)
    broken, fine = folder.session(), folder.session()
    broken["messages"].append({"role": "user", "content": [{"type": "text", "text": "b" * 70_000}]})
    broken["pages"].append("conversation")
    store.save(broken)
    store.save(fine)
    conn = sqlite3.connect(folder.db)
    conn.execute("UPDATE blobs SET body = replace(body, 'bbbb', 'cccc')")  # damaged on disk
    conn.commit()
    conn.close()
    daemon = folder.daemon(daemons).start()
    with daemon.client() as client:
        client.sync()
        assert client.get(broken["id"])["header"]["message_count"] == len(broken["messages"])
        with pytest.raises(DaemonError) as caught:
            client.get(broken["id"], window=3)
        assert "integrity" in caught.value.message, caught.value.message
        answer = client.get(fine["id"], window=3)
        assert answer["session"]["messages"] == fine["messages"][-3:]
        # A window that leaves the damaged message out is served.
        tail = client.get(broken["id"], window=0)
        assert tail["session"]["messages"] == []


def test_a_row_deleted_without_its_locator_is_reported(daemons: DaemonFactory, base: str) -> None:
    folder = Folder(base)
    store = AgentStore(folder.path)
    session = folder.session()
    store.save(session)
    daemon = folder.daemon(daemons).start()
    assert served_ids(daemon) == {session["id"]}
    conn = sqlite3.connect(folder.db)  # the agent's delete, crashed before the locator went
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("DELETE FROM sessions WHERE id=?", (session["id"],))
    conn.commit()
    conn.close()
    assert served_ids(daemon) == set()
    wait_for(lambda: daemon.events_named("store_locator_dangling"), 60, "the report")
    with daemon.client() as client:
        assert client.status()["databases"]["dangling_locators"] == 1
