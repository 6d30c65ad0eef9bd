"""The indexer's pure path rules (sessiond.watch.routing): where each file-system event goes,
how one batch's reads are coalesced, and which workspaces a confined folder answers for."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sessiond.watch.fs_event import FsEvent, FsKind
from sessiond.watch.routing import PendingReads, Route, owns_workspace, route

FOLDER = "/home/u/.local/share/codetether/sessions"


def _at(name: str) -> str:
    return os.path.join(FOLDER, name)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (FsKind.FOLDER_GONE, Route.FOLDER_GONE),
        (FsKind.FOLDER_DELETED, Route.FOLDER_GONE),
        (FsKind.FOLDER_ATTRIB, Route.FOLDER_ATTRIB),
        (FsKind.OVERFLOW, Route.OVERFLOW),
    ],
)
def test_events_on_the_folder_itself_go_by_their_kind(kind: FsKind, expected: Route) -> None:
    assert route(FsEvent(kind, FOLDER)) is expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ses_1.json", Route.SESSION_FILE),
        (".workspace_index.json", Route.AGENT_FILE),
        (".listing_cache.json", Route.AGENT_FILE),
        ("sessions.sqlite3", Route.DATABASE),
        ("sessions.sqlite3-wal", Route.DATABASE),
        ("sessions.sqlite3-shm", Route.IGNORED),  # no commit shows only there
        (".sessiond-cookie-12-3", Route.COOKIE),
        ("abc.path", Route.POINTER),
        ("ses_1.checkpoint.json", Route.IGNORED),  # the agent never lists it
        (".json", Route.IGNORED),
        ("notes.txt", Route.IGNORED),
        ("bad-\udcff.json", Route.UNDECODABLE),  # not UTF-8: no answer could carry its name
    ],
)
def test_a_written_file_goes_by_its_name(name: str, expected: Route) -> None:
    assert route(FsEvent(FsKind.CHANGED, _at(name))) is expected


@pytest.mark.parametrize("kind", [FsKind.GONE, FsKind.ATTRIB])
def test_a_cookie_or_pointer_counts_only_when_written(kind: FsKind) -> None:
    assert route(FsEvent(kind, _at(".sessiond-cookie-1-1"))) is Route.IGNORED
    assert route(FsEvent(kind, _at("abc.path"))) is Route.IGNORED


@pytest.mark.parametrize("kind", [FsKind.GONE, FsKind.ATTRIB])
def test_a_session_file_or_database_counts_whatever_happened_to_it(kind: FsKind) -> None:
    assert route(FsEvent(kind, _at("ses_1.json"))) is Route.SESSION_FILE
    assert route(FsEvent(kind, _at("sessions.sqlite3"))) is Route.DATABASE
    assert route(FsEvent(kind, _at(".listing_cache.json"))) is Route.AGENT_FILE


def test_a_batch_reads_each_file_once_in_first_seen_order() -> None:
    pending = PendingReads()
    events = [
        FsEvent(FsKind.CHANGED, _at("b.json")),
        FsEvent(FsKind.GONE, _at("a.json")),
        FsEvent(FsKind.CHANGED, _at("b.json")),
        FsEvent(FsKind.CHANGED, _at("a.json")),
    ]
    for event in events:
        pending.add(route(event), event)
    databases, files = pending.take()
    assert databases == []
    assert files == [(_at("b.json"), False), (_at("a.json"), False)]
    assert pending.take() == ([], [])  # taken: the next flush has nothing left


def test_an_attribute_change_anywhere_in_the_batch_makes_the_file_read_again() -> None:
    pending = PendingReads()
    for kind in (FsKind.CHANGED, FsKind.ATTRIB, FsKind.CHANGED):
        event = FsEvent(kind, _at("a.json"))
        pending.add(route(event), event)
    assert pending.take()[1] == [(_at("a.json"), True)]


def test_database_events_are_one_check_per_folder() -> None:
    pending = PendingReads()
    other = "/srv/other/sessions"
    for path in (
        _at("sessions.sqlite3-wal"),
        os.path.join(other, "sessions.sqlite3"),
        _at("sessions.sqlite3"),
    ):
        event = FsEvent(FsKind.CHANGED, path)
        pending.add(route(event), event)
    assert pending.take() == ([FOLDER, other], [])


def test_only_reads_are_noted() -> None:
    pending = PendingReads()
    event = FsEvent(FsKind.CHANGED, _at(".sessiond-cookie-1-1"))
    pending.add(route(event), event)
    assert pending.take() == ([], [])


def test_a_confined_folder_answers_only_the_workspaces_it_is_the_folder_of(
    tmp_path: Path,
) -> None:
    base = os.path.realpath(tmp_path)
    repo = os.path.join(base, "repo")
    os.makedirs(os.path.join(repo, ".git"))
    os.makedirs(os.path.join(repo, "sub", "deep"))
    elsewhere = os.path.join(base, "elsewhere")
    os.makedirs(elsewhere)
    folder = os.path.join(repo, ".codetether-agent", "sessions")
    allows = owns_workspace(folder, {"HOME": os.path.join(base, "home")})
    assert allows(repo)
    assert allows(os.path.join(repo, "sub", "deep"))  # the nearest ancestor with .git
    assert not allows(elsewhere)  # its own folder is elsewhere/.codetether-agent/sessions
    # Judged once per judge: a verdict stands though the rule would now say otherwise, and a
    # new judge (the next confinement) looks again.
    deep = os.path.join(repo, "sub", "deep")
    os.makedirs(os.path.join(deep, ".git"))
    assert allows(deep)
    assert not owns_workspace(folder, {"HOME": os.path.join(base, "home")})(deep)
