"""`search` end to end on a real daemon (docs/protocol.md §5.10; docs/search.md): answers equal a
reference that scans the files, stay true as sessions change, survive restarts and a damaged
index, and no query can break the daemon."""

from __future__ import annotations

import json
import os
import signal
import unicodedata
from collections.abc import Iterator
from typing import Any

import pytest
from sessionctl import Client, DaemonError

from tests.support.agent_sim import new_session
from tests.support.agent_store import AgentStore
from tests.support.daemon import DaemonFactory, DaemonProcess, wait_for
from tests.support.search_corpus import (
    ACCENTED,
    BUILD_TIMEOUT_S,
    PHRASE,
    WORDS,
    SearchCorpus,
    build,
    text_message,
    wait_built,
)

QUERIES = [
    *WORDS,
    " ".join(PHRASE),
    f'"{PHRASE[0]} {PHRASE[1]}"',
    f'"{PHRASE[1]} {PHRASE[0]}"',
    "quend*",
    "quendr*",
    "plim* vartrex",
    f'"{PHRASE[0]} lant"*',
    "ZORBQUIX",
    "Zorbquix quendor",
    "cafe",
    "CAFÉ",
    "uberflussig",
    "naivete",
    "naïv*",
    "nosuchwordanywhere",
]


def searched(
    client: Client, query: str, **fields: Any
) -> tuple[set[tuple[str, int | None]], dict[str, Any]]:
    answer = client.search(query, limit=1000, **fields)
    found = {(h["session_id"], h["message_index"]) for h in answer["hits"]}
    assert len(found) == len(answer["hits"]), "one hit per message"
    assert answer["total"] == len(answer["hits"]), query
    return found, answer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> SearchCorpus:
    return build(os.path.realpath(tmp_path_factory.mktemp("search")))


@pytest.fixture
def daemon(corpus: SearchCorpus, daemons: DaemonFactory, base: str) -> Iterator[DaemonProcess]:
    d = daemons(env_base=corpus.base).start()
    wait_built(d)
    yield d


def test_every_planted_word_phrase_and_prefix_is_found_where_it_is(
    corpus: SearchCorpus, daemon: DaemonProcess
) -> None:
    with daemon.client() as client:
        for query in QUERIES:
            expected = corpus.reference(query)
            found, answer = searched(client, query)
            assert found == expected, query
            assert answer["indexed"] == len(corpus.paths)
            assert answer["pending"] == 0
        # The reference is worth something: the planted words are there, the decoys are not.
        assert corpus.reference(WORDS[0]) and not corpus.reference("nosuchwordanywhere")
        assert corpus.reference(f'"{PHRASE[0]} {PHRASE[1]}"') != corpus.reference(" ".join(PHRASE))


def test_hits_carry_what_the_contract_names(corpus: SearchCorpus, daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        answer = client.search(WORDS[1], limit=5)
    assert answer["ok"] and answer["source"] == "daemon"
    assert 0 < len(answer["hits"]) <= 5
    scores = [h["score"] for h in answer["hits"]]
    assert scores == sorted(scores, reverse=True)
    for hit in answer["hits"]:
        session = corpus.load(hit["session_id"])
        assert hit["title"] == session["title"]
        assert hit["directory"] == session["metadata"]["directory"]
        assert hit["updated_at"] == session["updated_at"]
        assert f"[{WORDS[1]}]" in hit["snippet"].lower()
        if hit["message_index"] is None:
            assert hit["role"] == "title"
        else:
            assert hit["role"] == session["messages"][hit["message_index"]]["role"]


def test_accents_and_case_fold(corpus: SearchCorpus, daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        for word in ACCENTED:
            spellings = {word, word.lower(), word.upper(), "".join(_unaccent(word))}
            answers = {frozenset(searched(client, s)[0]) for s in spellings}
            assert len(answers) == 1 and next(iter(answers)), word


def _unaccent(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


def test_paging_covers_every_hit_once(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        whole = client.search("quend*", limit=1000)["hits"]
        pages = [
            client.search("quend*", limit=3, offset=o)["hits"] for o in range(0, len(whole), 3)
        ]
        default = client.search("quend*")
    assert [h for page in pages for h in page] == whole
    assert len(default["hits"]) == min(20, len(whole))


def test_workspace_filter_matches_as_resume_does(
    corpus: SearchCorpus, daemon: DaemonProcess
) -> None:
    link = os.path.join(corpus.base, "ws", "alpha-link")
    with daemon.client() as client:
        for workspace in [*corpus.workspaces.values(), link, os.path.join(link, "sub")]:
            listed = client.list(workspace, limit=1000)
            ids = {h["id"] for h in listed["sessions"]}
            for query in (*WORDS[:3], "quend*"):
                found, _ = searched(client, query, workspace=workspace)
                assert found == corpus.reference(query, ids), (workspace, query)
        # The symlinked spelling and the real one are the same workspace, as for resume.
        assert (
            client.search("quend*", workspace=link, limit=1000)["total"]
            == client.search("quend*", workspace=corpus.workspaces["alpha"], limit=1000)["total"]
        )


def test_changes_are_searchable_with_sync(
    tmp_path_factory: pytest.TempPathFactory, daemons: DaemonFactory
) -> None:
    corpus = build(os.path.realpath(tmp_path_factory.mktemp("live")), sessions=6)
    daemon = daemons(env_base=corpus.base).start()
    wait_built(daemon)
    session_id = next(iter(corpus.paths))
    session = corpus.load(session_id)
    with daemon.client() as client:
        # A save that appends a message: only the new message is indexed.
        before = client.status()["search"]["since_start"]
        session["messages"].append(text_message("user", "appended grundlefax here"))
        corpus.save("alpha", session)
        found, _ = searched(client, "grundlefax", sync=True)
        assert found == {(session_id, len(session["messages"]) - 1)}
        after = client.status()["search"]["since_start"]
        assert after["appended"] == before["appended"] + 1
        assert after["reindexed"] == before["reindexed"]
        assert after["messages"] == before["messages"] + 1
        # An edit: the old text is gone, the new one found, the session indexed whole again.
        session["messages"][-1] = text_message("user", "edited wobbleglint here")
        corpus.save("alpha", session)
        assert searched(client, "wobbleglint", sync=True)[0] == {
            (session_id, len(session["messages"]) - 1)
        }
        assert searched(client, "grundlefax", sync=True)[0] == set()
        assert client.status()["search"]["since_start"]["reindexed"] == after["reindexed"] + 1
        # Shortened (the agent's /undo): what went is no longer found.
        del session["messages"][-1]
        corpus.save("alpha", session)
        assert searched(client, "wobbleglint", sync=True)[0] == set()
        for query in WORDS:
            assert searched(client, query)[0] == corpus.reference(query)
        # Removed: nothing of it is found.
        os.unlink(corpus.paths[session_id])
        for query in (*WORDS, "quend*"):
            found, _ = searched(client, query, sync=True)
            assert session_id not in {sid for sid, _ in found}
            assert found == corpus.reference(query)
        assert client.status()["search"]["indexed"] == len(corpus.paths) - 1


def test_restart_indexes_nothing_again_and_a_damaged_index_is_rebuilt(
    tmp_path_factory: pytest.TempPathFactory, daemons: DaemonFactory
) -> None:
    corpus = build(os.path.realpath(tmp_path_factory.mktemp("restart")), sessions=12)
    first = daemons(env_base=corpus.base, name="first").start()
    built = wait_built(first)
    assert built["since_start"]["added"] == len(corpus.paths)
    index_file = os.path.join(first.state_dir, "search.sqlite3")
    assert os.stat(index_file).st_mode & 0o777 == 0o600
    assert first.stop() == 0

    again = daemons(env_base=corpus.base, name="first").start()
    status = wait_built(again)
    assert status["indexed"] == len(corpus.paths)
    assert all(v == 0 for v in status["since_start"].values()), status
    assert [e["queued"] for e in again.events_named("search_build_started")][-1] == 0
    with again.client() as client:
        assert searched(client, WORDS[0])[0] == corpus.reference(WORDS[0])
    assert again.stop() == 0

    # Damage the file in its middle: the daemon must notice, rebuild it, and answer right.
    size = os.path.getsize(index_file)
    with open(index_file, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(os.urandom(min(16384, size // 4)))
    third = daemons(env_base=corpus.base, name="first").start()
    status = wait_built(third)
    rebuilt = third.events_named("search_index_rebuilt")
    assert rebuilt and status["rebuilds"] == 1, third.log_text()
    assert status["since_start"]["added"] == len(corpus.paths)
    with third.client() as client:
        for query in (*WORDS, "quend*"):
            assert searched(client, query)[0] == corpus.reference(query)
    assert third.stop() == 0

    # A foreign file where the index should be: rebuilt too.
    with open(index_file, "wb") as fh:
        fh.write(b"not a database at all" * 100)
    fourth = daemons(env_base=corpus.base, name="first").start()
    status = wait_built(fourth)
    assert status["rebuilds"] == 1 and status["indexed"] == len(corpus.paths)
    with fourth.client() as client:
        assert searched(client, WORDS[2])[0] == corpus.reference(WORDS[2])


HOSTILE = [
    '"unbalanced',
    'a "b',
    "NEAR(zorbquix quendor, 2)",
    "zorbquix OR quendor",
    "NOT zorbquix",
    "body:zorbquix",
    "role:user",
    "{body}: x",
    "^zorbquix",
    "*",
    "**",
    "(((",
    ")",
    "!!!",
    "...,;:",
    "'",
    "a\x00b",
    "\x00",
    "x" * 1001,
    "zorbquix " * 200,
    "\U0010ffff",
]


def test_hostile_queries_get_bad_request_or_an_answer(
    corpus: SearchCorpus, daemon: DaemonProcess
) -> None:
    with daemon.client() as client:
        for query in [*HOSTILE, "y" * ((1 << 20) - 100)]:
            try:
                answer = client.search(query)
            except DaemonError as exc:
                assert exc.code == "bad_request", (query[:40], exc.response)
                assert exc.message.startswith("query") or "query" in exc.message
            else:
                assert isinstance(answer["hits"], list)
        for fields in (
            {"query": ""},
            {"query": 5},
            {"query": None},
            {"query": "x", "limit": -1},
            {"query": "x", "workspace": "relative"},
            {"query": ["x"]},
        ):
            with pytest.raises(DaemonError) as caught:
                client.request("search", **fields)
            assert caught.value.code == "bad_request", fields
        # Still serving, and right.
        assert client.ping()["ok"]
        assert searched(client, WORDS[0])[0] == corpus.reference(WORDS[0])
    assert daemon.unexpected_errors() == []
    assert not daemon.events_named("request_failed")


def bulk_corpus(base: str, sessions: int = 240) -> SearchCorpus:
    """The small corpus plus `sessions` bulky ones (big tool results): a first build that
    takes a while."""
    corpus = build(base, sessions=9)
    bulk = ("the migration failed with error code 42 in file src/lib.rs line 10 " * 400)[:24000]
    for n in range(sessions):
        name = ("alpha", "beta", "gamma")[n % 3]
        session = corpus.load(next(iter(corpus.paths)))
        session["id"] = f"bulk-{n:04d}"
        session["metadata"]["directory"] = corpus.workspaces[name]
        session["messages"] = [text_message("tool", f"{bulk} {n}") for _ in range(30)]
        session["pages"] = ["conversation"] * 30
        corpus.save(name, session)
    return corpus


def test_resume_stays_correct_during_the_first_build(
    tmp_path_factory: pytest.TempPathFactory, daemons: DaemonFactory
) -> None:
    corpus = bulk_corpus(os.path.realpath(tmp_path_factory.mktemp("big")))
    daemon = daemons(env_base=corpus.base).start()
    expected = {}
    with daemon.client() as client:
        for workspace in corpus.workspaces.values():
            expected[workspace] = client.resume(workspace, sync=True)["session_id"]
        during = 0
        while client.status()["search"]["building"]:
            for workspace, session_id in expected.items():
                assert client.resume(workspace)["session_id"] == session_id
                assert client.resume(workspace, window=2)["session"]["id"] == session_id
            during += 1
        assert during > 0, "the build ended before resume was asked"
    status = wait_built(daemon)
    assert status["indexed"] == len(corpus.paths)
    with daemon.client() as client:
        assert searched(client, WORDS[0])[0] == corpus.reference(WORDS[0])
        assert client.search('"migration failed"')["total"] == 240 * 30


def test_status_reports_the_index(daemon: DaemonProcess, corpus: SearchCorpus) -> None:
    with daemon.client() as client:
        search = client.status()["search"]
    assert search["available"] is True and search["reason"] is None
    assert search["indexed"] == len(corpus.paths) and search["pending"] == 0
    assert search["index_bytes"] > 0
    events = daemon.events_named("search_built")
    assert events and events[-1]["pending"] == 0
    json.dumps(search)


def test_without_fts5_search_is_unavailable_and_the_rest_serves(
    corpus: SearchCorpus, daemons: DaemonFactory
) -> None:
    daemon = daemons(env_base=corpus.base, env={"SESSIOND_TEST_FAULTS": "no_fts5"}).start()
    with daemon.client() as client:
        with pytest.raises(DaemonError) as caught:
            client.search(WORDS[0], sync=True)
        assert caught.value.code == "unavailable"
        assert "FTS5" in caught.value.message
        status = client.status()["search"]
        assert status["available"] is False and "FTS5" in status["reason"]
        assert client.resume(corpus.workspaces["beta"], sync=True)["session_id"]
    assert not os.path.exists(os.path.join(daemon.state_dir, "search.sqlite3"))
    assert daemon.events_named("search_unavailable")


def test_a_killed_worker_is_restarted_and_nothing_is_lost(
    tmp_path_factory: pytest.TempPathFactory, daemons: DaemonFactory
) -> None:
    corpus = build(os.path.realpath(tmp_path_factory.mktemp("crash")), sessions=6)
    daemon = daemons(env_base=corpus.base).start()
    daemon.allowed_errors.add("search_worker_failed")
    wait_built(daemon)
    session_id = next(iter(corpus.paths))
    session = corpus.load(session_id)
    with daemon.client() as client:
        pid = client.status()["search"]["worker_pid"]
        os.kill(pid, signal.SIGKILL)
        session["messages"].append(text_message("user", "after the crash flobberwick"))
        corpus.save("alpha", session)
        found, _ = searched(client, "flobberwick", sync=True)
        assert found == {(session_id, len(session["messages"]) - 1)}
        status = client.status()["search"]
        assert status["worker_pid"] not in (None, pid)
        for query in WORDS:
            assert searched(client, query)[0] == corpus.reference(query)
    assert daemon.events_named("search_worker_failed")


def test_a_build_cut_short_resumes_where_it_stopped(
    tmp_path_factory: pytest.TempPathFactory, daemons: DaemonFactory
) -> None:
    corpus = bulk_corpus(os.path.realpath(tmp_path_factory.mktemp("cut")), sessions=120)
    first = daemons(env_base=corpus.base, name="cut")
    first.start()
    with first.client() as client:
        wait_for(lambda: client.status()["search"]["indexed"] > 0, BUILD_TIMEOUT_S, "a batch in")
    first.kill()  # SIGKILL mid-build: committed batches stay, the rest is not lost either
    again = daemons(env_base=corpus.base, name="cut").start()
    status = wait_built(again)
    started = again.events_named("search_build_started")[-1]  # one log file for both runs
    assert started["indexed"] > 0 and started["queued"] < len(corpus.paths)
    assert status["indexed"] == len(corpus.paths)
    with again.client() as client:
        assert client.search('"migration failed"')["total"] == 120 * 30
        for query in WORDS:
            assert searched(client, query)[0] == corpus.reference(query)


def test_database_sessions_are_searchable_and_kept_live(
    tmp_path_factory: pytest.TempPathFactory, daemons: DaemonFactory
) -> None:
    """Sessions of the agent's SQLite store: indexed like files, grown ones by their new
    messages only, and dropped when the agent deletes them."""
    base = os.path.realpath(tmp_path_factory.mktemp("store"))
    workspace = os.path.join(base, "proj")
    folder = os.path.join(workspace, ".codetether-agent", "sessions")
    os.makedirs(os.path.join(workspace, ".git"))
    os.makedirs(folder)
    store = AgentStore(folder)
    session = new_session(workspace, title="stored session")
    session["messages"].append(text_message("user", "the flombrix migration failed"))
    other = new_session(workspace)
    other["messages"].append(text_message("user", "nothing to see"))
    store.save(session)
    store.save(other)
    daemon = daemons(sessions_dirs=[folder], discover=False).start()
    wait_built(daemon)
    with daemon.client() as client:
        assert searched(client, "flombrix", sync=True)[0] == {(session["id"], 0)}
        before = client.status()["search"]["since_start"]
        session["messages"].append(text_message("assistant", "fixed in the quazzle step"))
        store.save(session)
        assert searched(client, "quazzle", sync=True)[0] == {(session["id"], 1)}
        after = client.status()["search"]["since_start"]
        assert after["appended"] == before["appended"] + 1
        assert after["messages"] == before["messages"] + 1
        store.delete(session["id"])
        assert searched(client, "flombrix", sync=True)[0] == set()
        assert searched(client, "nothing", sync=True)[0] == {(other["id"], 0)}
