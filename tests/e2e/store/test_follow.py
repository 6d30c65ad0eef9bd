"""Following the agent's database (docs/storage.md): commits become visible to `sync` and
`watch` without any file rename, a live migration never shows a session twice or not at all,
saves stay current while clients query, and the history object of a database session is the
legacy bytes."""

from __future__ import annotations

import collections
import os
import random
import threading
from typing import Any

from sessionctl import Client

from tests.support.agent_sim import AgentSim, add_turn, expected_history, new_session
from tests.support.agent_store import AgentStore
from tests.support.daemon import DaemonFactory, DaemonProcess, wait_for
from tests.support.s3server import S3Server


class Folder:
    """One workspace whose sessions folder the agent writes in both generations."""

    def __init__(self, base: str) -> None:
        self.workspace = os.path.join(base, "proj")
        os.makedirs(os.path.join(self.workspace, ".git"))
        self.path = os.path.join(self.workspace, ".codetether-agent", "sessions")
        os.makedirs(self.path)
        self.sim = AgentSim(os.path.join(base, "global"), write_pointer=False)
        self.store = AgentStore(self.path)
        self.rng = random.Random(7)

    def session(self, turns: int) -> dict[str, Any]:
        session = new_session(self.workspace)
        for _ in range(turns):
            add_turn(session, self.rng, 120)
        return session

    def daemon(self, daemons: DaemonFactory, **kwargs: Any) -> DaemonProcess:
        return daemons(sessions_dirs=[self.path], discover=False, **kwargs)


class Watcher:
    """A `watch` stream read on a thread of its own."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.events: list[dict[str, Any]] = []
        self._client = daemon.client(timeout=120)
        self._stream = self._client.watch()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._stream:
                self.events.append(event)
        except Exception:
            pass

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("event") == name]

    def close(self) -> None:
        self._client.close()


def listed(client: Client) -> dict[str, int]:
    """id -> message_count of every session listed, asserting each id is listed once."""
    answer = client.list(None, limit=10_000)
    counts = collections.Counter(h["id"] for h in answer["sessions"])
    doubled = [i for i, n in counts.items() if n > 1]
    assert not doubled, f"listed twice: {doubled}"
    assert answer["total"] == len(answer["sessions"])
    return {h["id"]: h["message_count"] for h in answer["sessions"]}


def test_a_commit_is_seen_by_watch_and_sync_without_a_rename(
    daemons: DaemonFactory, base: str
) -> None:
    folder = Folder(base)
    session = folder.session(1)
    folder.store.save(session)
    daemon = folder.daemon(daemons).start()
    watcher = Watcher(daemon)
    with daemon.client() as client:
        client.sync()
        assert client.get(session["id"])["header"]["message_count"] == 4
        for turn in range(5):
            add_turn(session, folder.rng, 120)
            folder.store.save(session)  # the locator exists: no file is renamed or written
            expected = 4 * (turn + 2)
            # The commit's own file events make it visible without any sync.
            wait_for(
                lambda e=expected: (
                    any(ev["session_id"] == session["id"] for ev in watcher.named("session_saved"))
                    and client.get(session["id"])["header"]["message_count"] == e
                ),
                30,
                "the commit to show",
            )
            client.sync()
            answer = client.get(session["id"], window=2)
            assert answer["header"]["message_count"] == expected
            assert answer["session"]["messages"] == session["messages"][-2:]
            assert answer["dropped"] == expected - 2 + len(session["tool_uses"]) - 2
        folder.store.delete(session["id"])
        client.sync()
        assert listed(client) == {}
    wait_for(lambda: watcher.named("session_removed"), 30, "the removal event")
    watcher.close()
    # The agent removes the row, then the locator: that moment is no dangling locator.
    assert not daemon.events_named("store_locator_dangling")


def test_a_live_migration_shows_every_session_exactly_once(
    daemons: DaemonFactory, base: str
) -> None:
    folder = Folder(base)
    legacy = [folder.session(1 + i % 3) for i in range(50)]
    for session in legacy:
        folder.sim.save(folder.path, session)
    born = [folder.session(1) for _ in range(5)]  # sessions the database already holds
    for session in born:
        folder.store.save(session)
    expected = {s["id"]: len(s["messages"]) for s in legacy + born}
    daemon = folder.daemon(daemons).start()
    watcher = Watcher(daemon)
    checks = 0
    with daemon.client() as client:

        def check(step: str) -> None:
            nonlocal checks
            client.sync()
            assert listed(client) == expected, step
            checks += 1

        check("start")
        for number, session in enumerate(legacy):
            folder.store.migrate(session["id"], check)
            check("locator")
            other = born[number % len(born)]  # the agent keeps saving other sessions
            add_turn(other, folder.rng, 60)
            folder.store.save(other)
            expected[other["id"]] = len(other["messages"])
            check("save")
        for session in legacy:
            answer = client.get(session["id"], window=10**6)
            assert answer["session"]["messages"] == session["messages"]
            assert answer["file_bytes"] == 66  # the locator's size, as the store's TailLoad
    assert checks == 1 + 50 * 4
    assert watcher.named("session_removed") == [], "a migration is no removal"
    watcher.close()
    assert not any(
        e["event"] in ("session_invalid", "store_locator_dangling") for e in daemon.log_events()
    )


def test_saves_stay_current_while_twenty_clients_query(daemons: DaemonFactory, base: str) -> None:
    folder = Folder(base)
    sessions = [folder.session(2) for _ in range(5)]
    for session in sessions:
        folder.store.save(session)
    daemon = folder.daemon(daemons).start()
    stop = threading.Event()
    errors: list[BaseException] = []
    answered = [0]

    def query(number: int) -> None:
        try:
            with daemon.client(timeout=60) as client:
                while not stop.is_set():
                    client.resume(folder.workspace, window=3)
                    client.get(sessions[number % 5]["id"], window=5)
                    client.list(folder.workspace)
                    answered[0] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=query, args=(n,), daemon=True) for n in range(20)]
    for thread in threads:
        thread.start()
    try:
        with daemon.client(timeout=60) as client:
            for round_ in range(30):
                session = sessions[round_ % 5]
                add_turn(session, folder.rng, 200)
                folder.store.save(session)
                client.sync()
                answer = client.get(session["id"], window=4)
                assert answer["header"]["message_count"] == len(session["messages"])
                assert answer["session"]["messages"] == session["messages"][-4:]
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not errors, errors
    assert answered[0] > 0
    longest = folder.store.stats.longest_wait_s
    print(f"agent writer: longest BEGIN IMMEDIATE wait {longest * 1000:.2f} ms "
          f"over {len(folder.store.stats.waits_s)} saves, {answered[0]} query rounds")  # fmt: skip
    assert longest < 5.0  # the agent's busy timeout: it never fails for sessiond


def test_the_history_of_a_database_session_is_the_legacy_bytes(
    daemons: DaemonFactory, base: str, s3_server: S3Server, s3_bucket: str
) -> None:
    folder = Folder(base)
    as_file = folder.session(3)
    as_file["messages"][0]["content"][0]["text"] = 'ctl \x01 tab\t é ✓ "q" \\ /'
    as_row = folder.session(2)
    as_row["messages"].append(
        {"role": "assistant", "content": [{"type": "text", "text": "big ✓" * 20_000}]}
    )  # stored as a blob
    as_row["pages"].append("conversation")
    migrated = folder.session(2)
    folder.sim.save(folder.path, as_file)
    folder.sim.save(folder.path, migrated)
    folder.store.save(as_row)
    folder.store.migrate(migrated["id"])
    daemon = folder.daemon(daemons, env=s3_server.history_env(s3_bucket)).start()
    with daemon.client() as client:
        assert client.flush(timeout=60)["failed"] == 0
        for session in (as_file, as_row, migrated):
            legacy_bytes = expected_history(session)
            body = s3_server.get(s3_bucket, f"hist/{session['id']}/history.jsonl")
            assert body == legacy_bytes, session["id"]
        add_turn(as_row, folder.rng, 50)
        folder.store.save(as_row)
        wait_for(
            lambda: (
                s3_server.get(s3_bucket, f"hist/{as_row['id']}/history.jsonl")
                == expected_history(as_row)
            ),
            60,
            "the commit's upload",
        )
        client.sync()
    # Database sessions never enter the agent's own sidecar files.
    for name in (".workspace_index.json", ".listing_cache.json"):
        path = os.path.join(folder.path, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            assert as_row["id"] not in text and migrated["id"] not in text, name


def test_a_database_that_appears_later_and_a_restart(daemons: DaemonFactory, base: str) -> None:
    folder = Folder(base)
    legacy = folder.session(2)
    folder.sim.save(folder.path, legacy)
    daemon = folder.daemon(daemons, name="restarted").start()
    with daemon.client() as client:
        assert listed(client) == {legacy["id"]: 8}
        row = folder.session(1)
        folder.store.save(row)  # the folder's first database save creates sessions.sqlite3
        client.sync()
        assert listed(client) == {legacy["id"]: 8, row["id"]: 4}
        assert (
            client.resume(folder.workspace)["session_id"]
            == max((legacy, row), key=lambda s: s["updated_at"])["id"]
        )
        before = client.get(row["id"], window=3)
    assert daemon.stop() == 0
    # The header cache holds files only; the rows are read again at start.
    again = folder.daemon(daemons, name="restarted").start()
    with again.client() as client:
        client.sync()
        assert listed(client) == {legacy["id"]: 8, row["id"]: 4}
        assert client.get(row["id"], window=3) == before


def test_commits_of_a_writer_that_stays_connected_are_seen(
    daemons: DaemonFactory, base: str
) -> None:
    folder = Folder(base)
    session = folder.session(1)
    folder.store.save(session)
    daemon = folder.daemon(daemons).start()
    folder.store.hold()  # from now on, commits are WAL writes only: no close, no rename
    try:
        with daemon.client() as client:
            client.sync()
            for _ in range(3):
                add_turn(session, folder.rng, 80)
                folder.store.save(session)
                count = len(session["messages"])
                wait_for(  # no sync: the WAL's modify events (or, at worst, the slow timer)
                    lambda c=count: client.get(session["id"])["header"]["message_count"] == c,
                    30,
                    "the commit to show",
                )
    finally:
        folder.store.release()
