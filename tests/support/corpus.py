"""A corpus of many workspaces, written the way the agent writes them, for the end-to-end tests.

Everything a resume query can trip over is in it: explicit distinct mtimes and a tie broken by
file name, the agent's litter in every sessions folder, registry pointers, a worktree whose
sessions live in two folders, directories written through a symlink or spelled oddly, a
Unicode id, an old file without `pages`, a pretty-printed in-place Codex import, garbage
`.json` files, a folder given only by `--sessions-dir`, and a `CODETETHER_DATA_DIR` folder.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
from dataclasses import dataclass, field
from typing import Any

from tests.support.agent_sim import (
    AgentSim,
    add_turn,
    make_workspace,
    new_session,
    write_agent_litter,
)
from tests.support.daemon import private_env

T0 = 1_700_000_000 * 10**9
"""Corpus mtimes start here (2023), well before now: a save during a test is always newer."""
SECOND = 10**9
UPDATED_BASE = dt.datetime(2026, 8, 1, tzinfo=dt.UTC)
FRACTIONS = (".500", ".000250", ".000000001", ".123456789")
WINDOWS = (None, 0, 1, 3, 10**6)
"""Resume/get windows: none, zero, small, and larger than any session."""


def agent_env(base: str) -> dict[str, str]:
    """The per-user variables the agent and the daemon share (see tests.support.daemon)."""
    env = private_env(base, runtime_dir="/nonexistent")
    return {k: env[k] for k in ("HOME", "XDG_DATA_HOME")}


def agent_global_root(base: str) -> str:
    return os.path.join(agent_env(base)["XDG_DATA_HOME"], "codetether-agent")


@dataclass
class Corpus:
    base: str
    sim: AgentSim
    rng: random.Random
    workspaces: dict[str, str] = field(default_factory=dict)
    """name -> workspace path (a git checkout)."""
    folders: dict[str, str] = field(default_factory=dict)
    """name -> the workspace's sessions folder."""
    ids: list[str] = field(default_factory=list)
    """Every valid session id in the corpus, any folder."""
    expected_resume: dict[str, str] = field(default_factory=dict)
    """workspace path -> the id resume must give (worked out by construction)."""
    not_sessions: list[str] = field(default_factory=list)
    """Paths of `*.json` files in sessions folders that are no sessions (garbage)."""
    extra_dir: str = ""
    extra_workspace: str = ""
    data_dir: str = ""
    data_ids: list[str] = field(default_factory=list)
    alias: str = ""
    """A symlink to a workspace, to ask about that workspace through."""
    linked_workspace: str = ""
    """The workspace whose newest session's directory is written through a symlink."""
    linked_id: str = ""
    codex_id: str = ""
    codex_path: str = ""
    tie_ids: tuple[str, str] = ("", "")
    worktree_folder: str = ""
    subfolder: str = ""
    _clock: int = T0
    _updated: int = 0
    _slots: list[int] = field(default_factory=list)

    # --- building ---------------------------------------------------------------------------

    def next_mtime(self) -> int:
        self._clock += SECOND
        return self._clock

    def updated_at(self) -> str:
        """A fresh `updated_at`, in the agent's formats. Pairs share a whole second, one with a
        fraction and one without, so string order and instant order disagree."""
        if not self._slots:
            self._slots = self.rng.sample(range(10**6), 10**4)  # distinct whole seconds
        n = self._updated
        self._updated += 1
        moment = UPDATED_BASE + dt.timedelta(seconds=self._slots[n // 2])
        text = moment.strftime("%Y-%m-%dT%H:%M:%S")
        return text + ("Z" if n % 2 == 0 else FRACTIONS[(n // 2) % len(FRACTIONS)] + "Z")

    def session(
        self,
        directory: str | None,
        turns: int | None = None,
        session_id: str | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        doc = new_session(directory, session_id=session_id, **kw)
        for _ in range(self.rng.randrange(5) if turns is None else turns):
            add_turn(doc, self.rng, text_bytes=self.rng.randrange(20, 400))
        doc["updated_at"] = self.updated_at()
        doc["created_at"] = doc["updated_at"]
        return doc

    def save(
        self,
        folder: str,
        doc: dict[str, Any],
        mtime_ns: int | None = None,
        sim: AgentSim | None = None,
    ) -> str:
        (sim or self.sim).save(folder, doc, mtime_ns=mtime_ns or self.next_mtime())
        self.ids.append(doc["id"])
        return doc["id"]

    def add_workspace(self, name: str) -> tuple[str, str]:
        workspace, folder = make_workspace(os.path.join(self.base, "ws"), name)
        self.workspaces[name] = workspace
        self.folders[name] = folder
        return workspace, folder

    def plain_sessions(self, name: str, count: int) -> str:
        """`count` sessions for workspace `name`, each newer than the last; returns the newest."""
        workspace, folder = self.workspaces[name], self.folders[name]
        newest = ""
        for _ in range(count):
            newest = self.save(folder, self.session(workspace))
        write_agent_litter(folder, newest)
        self.expected_resume[workspace] = newest
        return newest

    def write_garbage(self, folder: str, name: str, data: bytes) -> None:
        path = os.path.join(folder, name)
        with open(path, "wb") as fh:
            fh.write(data)
        os.utime(path, ns=(self.next_mtime(),) * 2)
        self.not_sessions.append(path)

    # --- what the daemon serves -------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        return agent_env(self.base)

    @property
    def data_env(self) -> dict[str, str]:
        return {**self.env, "CODETETHER_DATA_DIR": self.data_dir}

    def all_workspaces(self) -> list[str]:
        """Every workspace worth asking about, including spellings that must give nothing."""
        asked = [
            *self.workspaces.values(),
            *self.expected_resume,
            self.alias,
            os.path.join(self.base, "links", "w05-link"),
            self.subfolder,
            os.path.join(self.base, "ws", "no-such-workspace"),
        ]
        return list(dict.fromkeys(asked))


def build_corpus(base: str, seed: int = 20260801) -> Corpus:
    """Write the corpus under `base` (a resolved path)."""
    corpus = Corpus(base=base, sim=AgentSim(agent_global_root(base)), rng=random.Random(seed))
    for i in range(12):
        corpus.add_workspace(f"w{i:02d}" if i != 6 else "w06-ünï")

    # w00: plain, plus a session with no directory (listed, never resumed) and no title.
    corpus.plain_sessions("w00", 4)
    corpus.save(corpus.folders["w00"], corpus.session(None, title=None), mtime_ns=T0)

    # w01: the two newest share their mtime; the greater file name wins, though written first.
    corpus.plain_sessions("w01", 3)
    tie = corpus.next_mtime()
    high = corpus.save(
        corpus.folders["w01"], corpus.session(corpus.workspaces["w01"], session_id="tie-zz-9"), tie
    )
    low = corpus.save(
        corpus.folders["w01"], corpus.session(corpus.workspaces["w01"], session_id="tie-Aa-1"), tie
    )
    corpus.tie_ids = (high, low)
    corpus.expected_resume[corpus.workspaces["w01"]] = high
    corpus.subfolder = os.path.join(corpus.workspaces["w01"], "src")
    os.makedirs(corpus.subfolder)
    # A sub-folder is a workspace of its own.
    corpus.expected_resume[corpus.subfolder] = corpus.save(
        corpus.folders["w01"], corpus.session(corpus.subfolder)
    )

    # w02, w03: plain; w03 is also asked about through a symlink, and holds an old file that
    # has no `pages` or `summary_index` (serde defaults), which a window must recompute.
    corpus.plain_sessions("w02", 5)
    corpus.plain_sessions("w03", 2)
    old = corpus.session(corpus.workspaces["w03"], turns=4)
    del old["pages"], old["summary_index"]
    corpus.expected_resume[corpus.workspaces["w03"]] = corpus.save(corpus.folders["w03"], old)
    os.makedirs(os.path.join(base, "links"))
    corpus.alias = os.path.join(base, "links", "w03-alias")
    os.symlink(corpus.workspaces["w03"], corpus.alias)

    # w04: a git worktree; the agent saved some of w04's sessions into the worktree's folder
    # (docs/agent-files.md, "Folders"). The worktree is a workspace of its own too. w04's two
    # newest tie across the two folders: the greater file name wins, though its path is the
    # smaller.
    w04, f04 = corpus.workspaces["w04"], corpus.folders["w04"]
    corpus.plain_sessions("w04", 3)
    worktree = os.path.join(w04, ".codetether-worktrees", "feat")
    os.makedirs(worktree)
    with open(os.path.join(worktree, ".git"), "w") as fh:
        fh.write("gitdir: ../../.git/worktrees/feat\n")
    corpus.worktree_folder = os.path.join(worktree, ".codetether-agent", "sessions")
    corpus.save(corpus.worktree_folder, corpus.session(worktree))
    corpus.expected_resume[worktree] = corpus.ids[-1]
    corpus.save(corpus.worktree_folder, corpus.session(w04, turns=1))
    tie = corpus.next_mtime()
    corpus.save(corpus.worktree_folder, corpus.session(w04, 3, session_id="a-w04-feat"), tie)
    assert os.path.join(corpus.worktree_folder, "a") > os.path.join(f04, "z")
    corpus.expected_resume[w04] = corpus.save(
        f04, corpus.session(w04, 2, session_id="z-w04-local"), tie
    )
    write_agent_litter(corpus.worktree_folder, corpus.ids[-1])

    # w05: sessions written while the agent ran in a symlink to the workspace; the newest of
    # all has its directory spelled through the link.
    w05, f05 = corpus.workspaces["w05"], corpus.folders["w05"]
    link = os.path.join(base, "links", "w05-link")
    os.symlink(w05, link)
    corpus.save(f05, corpus.session(w05))
    corpus.save(f05, corpus.session(link))
    corpus.save(f05, corpus.session(w05))
    corpus.linked_workspace = w05
    corpus.linked_id = corpus.save(f05, corpus.session(link, turns=2))
    corpus.expected_resume[w05] = corpus.linked_id
    write_agent_litter(f05, corpus.linked_id)

    # w06: a Unicode workspace name, id and title.
    w06, f06 = corpus.workspaces["w06-ünï"], corpus.folders["w06-ünï"]
    corpus.plain_sessions("w06-ünï", 2)
    corpus.expected_resume[w06] = corpus.save(
        f06, corpus.session(w06, session_id="sessão-ü-1", title="«résumé» ✓", turns=2)
    )

    # w07: directories spelled oddly. The newest names a path through a missing folder (its
    # canonicalization fails, so it is no w07 session); then a trailing slash (w07's).
    w07, f07 = corpus.workspaces["w07"], corpus.folders["w07"]
    os.makedirs(os.path.join(w07, "src"))
    corpus.plain_sessions("w07", 2)
    corpus.save(f07, corpus.session(w07 + "/src/.."))
    corpus.expected_resume[w07] = corpus.save(f07, corpus.session(w07 + "/"))
    corpus.save(f07, corpus.session(w07 + "/nosuch/.."))

    # w08: a Codex import, pretty JSON written in place, newest by mtime.
    w08, f08 = corpus.workspaces["w08"], corpus.folders["w08"]
    corpus.plain_sessions("w08", 3)
    codex = corpus.session(w08, session_id="019a2b3c-codex-rollout", turns=3, agent="build")
    corpus.codex_path = corpus.sim.import_codex(f08, codex)
    os.utime(corpus.codex_path, ns=(corpus.next_mtime(),) * 2)
    corpus.codex_id = codex["id"]
    corpus.ids.append(codex["id"])
    corpus.expected_resume[w08] = codex["id"]

    # w09: garbage `.json` files, all newer than its sessions.
    w09, f09 = corpus.workspaces["w09"], corpus.folders["w09"]
    newest = corpus.plain_sessions("w09", 3)
    with open(os.path.join(f09, f"{newest}.json"), "rb") as fh:
        whole = fh.read()
    corpus.write_garbage(f09, "garbage.json", b"\x00\xffnot json at all")
    corpus.write_garbage(f09, "array.json", b"[1, 2, 3]")
    corpus.write_garbage(f09, "torn.json", whole[: len(whole) // 2])
    no_messages = corpus.session(w09, session_id="nomessages")
    del no_messages["messages"]
    corpus.write_garbage(f09, "nomessages.json", json.dumps(no_messages).encode())
    corpus.expected_resume[w09] = newest

    # w10, w11: plain; w11's own folder holds nothing but litter.
    corpus.plain_sessions("w10", 4)
    os.makedirs(corpus.folders["w11"])
    write_agent_litter(corpus.folders["w11"], "0000-litter-only")

    # A folder the daemon learns of only from --sessions-dir: its agent keeps its registry
    # elsewhere.
    corpus.extra_workspace, _ = make_workspace(os.path.join(base, "elsewhere"), "proj-x")
    corpus.extra_dir = os.path.join(base, "elsewhere", "sessions")
    other_agent = AgentSim(os.path.join(base, "elsewhere", "agent-global"))
    for turns in (1, 0, 2):
        corpus.save(
            corpus.extra_dir, corpus.session(corpus.extra_workspace, turns), sim=other_agent
        )
    corpus.expected_resume[corpus.extra_workspace] = corpus.ids[-1]
    write_agent_litter(corpus.extra_dir, corpus.ids[-1])

    # CODETETHER_DATA_DIR: one global sessions folder (and registry) for an agent run with it.
    corpus.data_dir = os.path.join(base, "data")
    data_agent = AgentSim(corpus.data_dir)
    data_sessions = os.path.join(corpus.data_dir, "sessions")
    for name in ("w10", "w11", "w11"):
        doc = corpus.session(corpus.workspaces[name])
        data_agent.save(data_sessions, doc, mtime_ns=corpus.next_mtime())
        corpus.data_ids.append(doc["id"])
    write_agent_litter(data_sessions, corpus.data_ids[-1])
    return corpus
