"""A corpus of both storage generations: a pure-database folder, a pure-file folder and a mixed
one, built with the agent's own ways of writing (tests.support.agent_store and
tests.support.agent_sim).

It holds what the answers must get right (docs/storage.md): ties on `updated_at` (between two
rows, and between a row and a file), a body of 64 KiB or more stored as a blob, tool uses, an
empty session, a session whose stored directory is a symlink spelling (a legacy import keeps
it as written), a migration caught between its commit and its locator (the legacy file and
the row both there), a row without a locator, and a workspace whose sessions span a folder
with a database and one without.
"""

from __future__ import annotations

import datetime as dt
import os
import random
from dataclasses import dataclass, field
from typing import Any

from tests.support.agent_sim import AgentSim, add_turn, chrono_time, make_workspace, new_session
from tests.support.agent_store import AgentStore
from tests.support.corpus import agent_global_root

T0 = dt.datetime(2026, 8, 1, 12, 0, 0, tzinfo=dt.UTC)


def at(seconds: float) -> str:
    return chrono_time(T0 + dt.timedelta(seconds=seconds))


def sid(name: str) -> str:
    """Readable fixed ids, so ties on the id are decided by construction."""
    return f"{name}-0000-4000-8000-000000000000"


@dataclass
class StoreCorpus:
    base: str
    sim: AgentSim
    workspaces: dict[str, str] = field(default_factory=dict)
    folders: dict[str, str] = field(default_factory=dict)
    stores: dict[str, AgentStore] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    expected_resume: dict[str, str] = field(default_factory=dict)  # workspace -> id
    linked: str = ""  # a symlink to the mixed workspace

    def ids(self) -> list[str]:
        return sorted(self.sessions)


def _session(
    corpus: StoreCorpus, name: str, workspace: str, updated: float, turns: int, rng: random.Random
) -> dict[str, Any]:
    session = new_session(workspace, session_id=sid(name), title=f"session {name}")
    for _ in range(turns):
        add_turn(session, rng)
    session["created_at"] = at(0)
    session["updated_at"] = at(updated)
    corpus.sessions[session["id"]] = session
    return session


def build_store_corpus(base: str, seed: int = 11) -> StoreCorpus:
    rng = random.Random(seed)
    corpus = StoreCorpus(base, AgentSim(agent_global_root(base)))
    for name in ("dbonly", "files", "mixed", "span"):
        workspace, folder = make_workspace(base, name)
        corpus.workspaces[name] = workspace
        corpus.folders[name] = folder
        os.makedirs(folder, exist_ok=True)
    ws, folders, sim = corpus.workspaces, corpus.folders, corpus.sim

    # A pure-database folder: saved twice, empty, a tie on updated_at, a blob.
    db = corpus.stores["dbonly"] = AgentStore(folders["dbonly"])
    first = _session(corpus, "a1", ws["dbonly"], 5, 2, rng)
    db.save(first)
    add_turn(first, rng)
    first["updated_at"] = at(10)
    db.save(first)
    db.save(_session(corpus, "a2", ws["dbonly"], 20, 0, rng))
    db.save(_session(corpus, "a3", ws["dbonly"], 30, 1, rng))
    db.save(_session(corpus, "a4", ws["dbonly"], 30, 1, rng))  # ties a3: the greater id wins
    big = _session(corpus, "a5", ws["dbonly"], 8, 1, rng)
    big["messages"].append(
        {"role": "assistant", "content": [{"type": "text", "text": "x✓" * 40_000}]}
    )
    big["pages"].append("conversation")
    db.save(big)
    no_locator = _session(corpus, "a6", ws["dbonly"], 9, 1, rng)
    db.save(no_locator, publish_locator=False)  # a row whose locator is not there (yet)
    corpus.expected_resume[ws["dbonly"]] = sid("a4")

    # A pure-file folder.
    for name, updated, mtime in (("b1", 40, 1), ("b2", 35, 2)):
        session = _session(corpus, name, ws["files"], updated, 2, rng)
        sim.save(folders["files"], session, mtime_ns=(1_800_000_000 + mtime) * 10**9)
    corpus.expected_resume[ws["files"]] = sid("b2")  # newest file, not newest updated_at

    # A mixed folder.
    mixed = corpus.stores["mixed"] = AgentStore(folders["mixed"])
    corpus.linked = os.path.join(base, "link-mixed")
    os.symlink(ws["mixed"], corpus.linked)
    in_flight = _session(corpus, "c1", ws["mixed"], 40, 2, rng)
    sim.save(folders["mixed"], in_flight)

    def stop_before_locator(step: str) -> None:
        if step == "commit":
            raise _Stop

    try:
        mixed.migrate(in_flight["id"], stop_before_locator)  # row + legacy file, no locator
    except _Stop:
        pass
    sim.save(folders["mixed"], _session(corpus, "c2", ws["mixed"], 50, 1, rng))
    mixed.save(_session(corpus, "c3", ws["mixed"], 50, 1, rng))  # ties c2: the row wins
    spelled = _session(corpus, "c4", corpus.linked, 45, 1, rng)
    sim.save(folders["mixed"], spelled)
    mixed.migrate(spelled["id"])  # the directory stays a symlink spelling
    sim.save(folders["mixed"], _session(corpus, "c5", ws["mixed"], 15, 1, rng))
    corpus.expected_resume[ws["mixed"]] = sid("c3")

    # A workspace whose sessions are in the database folder and the file folder.
    db.save(_session(corpus, "d1", ws["span"], 60, 1, rng))
    for name, updated, mtime in (("d2", 70, 3), ("d3", 65, 4)):
        session = _session(corpus, name, ws["span"], updated, 1, rng)
        sim.save(folders["files"], session, mtime_ns=(1_800_000_000 + mtime) * 10**9)
    corpus.expected_resume[ws["span"]] = sid("d2")  # updated_at rules once a database is in

    for name, store in corpus.stores.items():  # the agent records a pointer after each save
        for session_id in store.saved_ids():
            sim.write_location(session_id, os.path.join(folders[name], session_id + ".json"))
    return corpus


class _Stop(Exception):
    pass
