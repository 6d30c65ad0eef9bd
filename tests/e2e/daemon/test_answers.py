"""The daemon's `resume`, `get` and `list` equal a cold-scan reference on a corpus of many
workspaces (docs/protocol.md §7, §8; tests/support/reference.py)."""

from __future__ import annotations

import json
import os

import pytest
from sessionctl import Client, DaemonError

from tests.support import reference
from tests.support.agent_sim import AgentSim, make_workspace, new_session
from tests.support.compare import assert_answer, assert_listing
from tests.support.corpus import WINDOWS, Corpus, agent_global_root
from tests.support.daemon import DaemonFactory, DaemonProcess
from tests.support.reference import real_or_raw

NOT_SESSION_IDS = ("garbage", "array", "torn", "nomessages", "no-such-session", "0000-deep")
PAGES = ((100, 0), (1, 0), (3, 2), (0, 0), (5, 10**6), (10**6, 1))
"""(limit, offset) pairs: default, first, a middle page, nothing, past the end, all but one."""


def served(corpus: Corpus) -> list[str]:
    """What the corpus daemon serves: the registry's folders and the --sessions-dir one."""
    return reference.served_folders(corpus.env, [corpus.extra_dir])


def expect_not_found(client: Client, op: str, **fields: object) -> None:
    with pytest.raises(DaemonError) as caught:
        client.request(op, **fields)
    assert caught.value.code == "not_found", caught.value.response


def test_the_reference_agrees_with_how_the_corpus_was_built(corpus: Corpus) -> None:
    # The reference is only worth comparing with if it gives the answers the corpus was built
    # to have: ties, symlinks, odd spellings, the Codex file and garbage included.
    folders = served(corpus)
    for workspace in corpus.all_workspaces():
        expected = corpus.expected_resume.get(real_or_raw(workspace))
        found = reference.resume(folders, workspace)
        assert (found and found["session_id"]) == expected, workspace
    assert len(reference.sessions_in(folders)) == len(corpus.ids)


def test_resume_equals_the_reference(corpus: Corpus, corpus_daemon: DaemonProcess) -> None:
    snapshot = reference.Snapshot(served(corpus))
    with corpus_daemon.client() as client:
        for workspace in corpus.all_workspaces():
            for window in WINDOWS:
                expected = snapshot.resume(workspace, window)
                if expected is None:
                    expect_not_found(client, "resume", workspace=workspace, window=window)
                else:
                    assert_answer(client.resume(workspace, window=window), expected)


def test_get_equals_the_reference(corpus: Corpus, corpus_daemon: DaemonProcess) -> None:
    snapshot = reference.Snapshot(served(corpus))
    with corpus_daemon.client() as client:
        for session_id in corpus.ids:
            for window in WINDOWS:
                expected = snapshot.get(session_id, window)
                assert expected is not None, session_id
                assert_answer(client.get(session_id, window=window), expected)
        for session_id in NOT_SESSION_IDS:
            assert snapshot.get(session_id) is None
            expect_not_found(client, "get", id=session_id)


def test_list_equals_the_reference(corpus: Corpus, corpus_daemon: DaemonProcess) -> None:
    snapshot = reference.Snapshot(served(corpus))
    with corpus_daemon.client() as client:
        for workspace in [None, *corpus.all_workspaces()]:
            for limit, offset in PAGES:
                expected = snapshot.list(workspace, limit, offset)
                actual = client.list(workspace, limit=limit, offset=offset)
                assert_listing(actual, expected)
        # The default page is 100 and the whole corpus fits in it.
        everything = client.request("list")
        assert_listing(everything, snapshot.list())
        assert everything["total"] == len(corpus.ids)


def test_window_cuts_messages_and_tool_uses_each(
    corpus: Corpus, corpus_daemon: DaemonProcess
) -> None:
    # Spelled out once on one session, so the rule is visible without the reference.
    workspace = corpus.workspaces["w03"]  # its newest is an old file without `pages`
    with open(
        os.path.join(corpus.folders["w03"], corpus.expected_resume[workspace] + ".json")
    ) as fh:
        doc = json.load(fh)
    assert "pages" not in doc and len(doc["messages"]) == 16 and len(doc["tool_uses"]) == 4
    with corpus_daemon.client() as client:
        whole = client.resume(workspace, window=10**6)
        assert whole["session"]["messages"] == doc["messages"]
        assert whole["dropped"] == 0
        # Without `pages` in the file, they are computed from the messages.
        assert (
            whole["session"]["pages"]
            == ["conversation", "conversation", "evidence", "conversation"] * 4
        )
        assert whole["session"]["summary_index"] == {"tree": [], "generation": 0, "lru_order": []}
        three = client.resume(workspace, window=3)
        assert three["session"]["messages"] == doc["messages"][-3:]
        assert three["session"]["tool_uses"] == doc["tool_uses"][-3:]
        assert three["session"]["pages"] == ["conversation", "evidence", "conversation"]
        assert three["dropped"] == 13 + 1
        zero = client.resume(workspace, window=0)
        assert zero["session"]["messages"] == [] and zero["session"]["tool_uses"] == []
        assert zero["session"]["pages"] == []
        assert zero["dropped"] == 16 + 4
        assert zero["file_bytes"] == os.path.getsize(zero["path"]) == zero["header"]["file_bytes"]
        assert "session" not in client.resume(workspace)


def test_symlinks_workspace_asked_through_one_and_directory_written_through_one(
    corpus: Corpus, corpus_daemon: DaemonProcess
) -> None:
    with corpus_daemon.client() as client:
        # Asked about through a symlink: the same answer as for the real path.
        real = corpus.workspaces["w03"]
        assert client.resume(corpus.alias, window=2) == client.resume(real, window=2)
        assert client.list(corpus.alias) == client.list(real)
        # Sessions whose directory is written through a link belong to the real workspace;
        # the newest of them is the answer, though the agent's own prefilter would miss it.
        link = os.path.join(corpus.base, "links", "w05-link")
        answer = client.resume(corpus.linked_workspace)
        assert answer["session_id"] == corpus.linked_id
        assert answer["header"]["directory"] == link  # as written in the file
        assert client.resume(link)["session_id"] == corpus.linked_id
        listed = client.list(corpus.linked_workspace)
        assert listed["total"] == 4
        assert {h["directory"] for h in listed["sessions"]} == {corpus.linked_workspace, link}


def test_codex_import_pretty_json_in_place(corpus: Corpus, corpus_daemon: DaemonProcess) -> None:
    with open(corpus.codex_path, "rb") as fh:
        raw = fh.read()
    assert raw.startswith(b"{\n  ") and b'\n  "messages": [' in raw  # really pretty-printed
    doc = json.loads(raw)
    with corpus_daemon.client() as client:
        answer = client.resume(corpus.workspaces["w08"], window=5)
        assert answer["session_id"] == corpus.codex_id
        assert answer["path"] == corpus.codex_path
        assert answer["header"]["message_count"] == len(doc["messages"]) == 12
        assert answer["header"]["file_bytes"] == len(raw)
        assert answer["session"]["messages"] == doc["messages"][-5:]
        assert answer["session"]["metadata"] == doc["metadata"]
        assert client.get(corpus.codex_id)["path"] == corpus.codex_path


def test_garbage_is_not_served_and_the_daemon_keeps_serving(
    fresh_corpus: Corpus, daemons: DaemonFactory
) -> None:
    corpus = fresh_corpus
    corpus_daemon = daemons(sessions_dirs=[corpus.extra_dir]).start()
    folders = served(corpus)
    with corpus_daemon.client() as client:
        listed = client.request("list", limit=10**6)
        paths = {h["path"] for h in listed["sessions"]}
        assert paths.isdisjoint(corpus.not_sessions)
        assert client.status()["sessions"] == len(corpus.ids)
        assert_answer(
            client.resume(corpus.workspaces["w09"]),
            reference.resume(folders, corpus.workspaces["w09"]) or {},
        )
    invalid = {e["path"] for e in corpus_daemon.events_named("session_invalid")}
    assert set(corpus.not_sessions) <= invalid
    # Garbage arriving while it runs (bytes, deep nesting, a session torn in half) is skipped
    # too, and a good save in the same folder right after it is served.
    sim = corpus.sim
    folder = corpus.folders["w09"]
    for name, data in (
        ("0000-deep.json", b"[" * 200_000 + b"]" * 200_000),
        ("deep-inside.json", b'{"id":"x","messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ("binary.json", os.urandom(4096)),
    ):
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(data)
    good = new_session(corpus.workspaces["w09"])
    sim.save(folder, good)
    with corpus_daemon.client() as client:
        assert client.resume(corpus.workspaces["w09"], sync=True)["session_id"] == good["id"]
        assert client.ping()["ok"]
        expect_not_found(client, "get", id="0000-deep")


def test_initial_scan_survives_a_deeply_nested_file(base: str, daemons: DaemonFactory) -> None:
    # A file the decoder cannot follow to the end must not stop the scan of its folder: files
    # sorted after it are still indexed.
    workspace, folder = make_workspace(os.path.join(base, "ws"), "deep")
    sim = AgentSim(agent_global_root(base))
    os.makedirs(folder)
    with open(os.path.join(folder, "0000-deep.json"), "wb") as fh:
        fh.write(b'{"id":"deep","messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    ids = []
    for _ in range(3):
        doc = new_session(workspace)
        sim.save(folder, doc)
        ids.append(doc["id"])
    daemon = daemons().start()
    with daemon.client() as client:
        assert client.list(workspace)["total"] == 3
        for session_id in ids:
            assert client.get(session_id)["session_id"] == session_id


def test_codetether_data_dir(corpus: Corpus, daemons: DaemonFactory) -> None:
    # With CODETETHER_DATA_DIR the agent keeps sessions and registry there (docs/agent-files.md):
    # the daemon serves that folder, and the registry under XDG_DATA_HOME no longer counts.
    daemon = daemons(env_base=corpus.base, env={"CODETETHER_DATA_DIR": corpus.data_dir}).start()
    env = corpus.data_env
    with daemon.client() as client:
        folders = reference.served_folders(env)
        assert folders == [os.path.join(corpus.data_dir, "sessions")]
        assert_listing(client.list(), reference.list_sessions(folders))
        assert {h["id"] for h in client.list()["sessions"]} == set(corpus.data_ids)
        asked = []
        for name in ("w10", "w11", "w02"):
            workspace = corpus.workspaces[name]
            asked.append(workspace)
            # Its own folder is served too once asked about (source 4).
            folders = reference.served_folders(env, asked=[workspace])
            for window in (None, 2):
                expected = reference.resume(folders, workspace, window)
                assert expected is not None
                assert_answer(client.resume(workspace, window=window), expected)
        assert client.resume(corpus.workspaces["w11"])["session_id"] == corpus.data_ids[-1]
        folders = reference.served_folders(env, asked=asked)
        assert_listing(client.list(limit=10**6), reference.list_sessions(folders, None, 10**6))


def test_folder_given_only_by_sessions_dir(corpus: Corpus, corpus_daemon: DaemonProcess) -> None:
    with corpus_daemon.client() as client:
        answer = client.resume(corpus.extra_workspace, window=1)
        assert answer["session_id"] == corpus.expected_resume[corpus.extra_workspace]
        assert os.path.dirname(answer["path"]) == corpus.extra_dir
        roots = {r["path"]: r for r in client.status()["roots"]}
        assert roots[corpus.extra_dir]["sessions"] == 3
        assert "config" in roots[corpus.extra_dir]["sources"]


def test_workspace_folder_served_once_asked_about(base: str, daemons: DaemonFactory) -> None:
    # Source 4: a workspace whose sessions no pointer names is served when a client asks
    # about it; with --no-discover it is not, and neither is the registry.
    registered_ws, registered = make_workspace(os.path.join(base, "ws"), "registered")
    unregistered_ws, unregistered = make_workspace(os.path.join(base, "ws"), "quiet")
    AgentSim(agent_global_root(base)).save(registered, new_session(registered_ws))
    quiet = AgentSim(agent_global_root(base), write_pointer=False)
    quiet_ids = []
    for _ in range(2):
        doc = new_session(unregistered_ws)
        quiet.save(unregistered, doc)
        quiet_ids.append(doc["id"])
    daemon = daemons().start()
    with daemon.client() as client:
        assert client.list()["total"] == 1
        expect_not_found(client, "get", id=quiet_ids[0])
        assert client.resume(unregistered_ws)["session_id"] in quiet_ids
        assert client.list()["total"] == 3
        assert client.get(quiet_ids[0])["session_id"] == quiet_ids[0]
    daemon.stop()
    strict = daemons(discover=False, sessions_dirs=[registered]).start()
    with strict.client() as client:
        expect_not_found(client, "resume", workspace=unregistered_ws)
        assert client.list()["total"] == 1
        assert [r["path"] for r in client.status()["roots"]] == [registered]


def test_without_s3_settings_status_says_the_sink_is_off_and_flush_has_nothing_to_do(
    corpus_daemon: DaemonProcess,
) -> None:
    with corpus_daemon.client() as client:
        uploads = client.status()["uploads"]
        flushed = client.flush(timeout=5)
    assert uploads["enabled"] is False and uploads["state"] == "off"
    assert (uploads["pending"], uploads["uploaded"], uploads["failed"]) == (0, 0, 0)
    assert flushed == {"ok": True, "uploaded": 0, "failed": 0, "catalog_written": None}
