"""A corpus with known text for the search tests, and a reference that finds planted words,
phrases and prefixes by scanning the session files (docs/search.md, "What is indexed")."""

from __future__ import annotations

import json
import os
import random
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from tests.support.agent_sim import AgentSim, make_workspace, new_session
from tests.support.corpus import agent_global_root
from tests.support.daemon import DaemonProcess, wait_for

WORDS = ["zorbquix", "quendor", "quendril", "plimsok", "vartrex", "oxwimble", "drunfel"]
PHRASE = ("marble", "lantern")
ACCENTED = ["Café", "ÜBERFLÜSSIG", "naïveté"]
FILLER = [
    "the",
    "of",
    "and",
    "to",
    "fix",
    "bug",
    "file",
    "test",
    "run",
    "build",
    "error",
    "line",
    "code",
]


def fold_tokens(text: str) -> list[str]:
    """unicode61 remove_diacritics 2, as the tests model it: accents off, case folded, words
    are runs of letters and digits."""
    stripped = "".join(
        c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
    )
    return re.findall(r"[^\W_]+", stripped.casefold())


def searchable_texts(session: dict[str, Any]) -> dict[int | None, str]:
    """What the index holds of a session: None for its title, else a message index."""
    texts: dict[int | None, str] = {}
    if session.get("title"):
        texts[None] = session["title"]
    for index, message in enumerate(session["messages"]):
        pieces = [
            p["text"] if p["type"] == "text" else p["content"]
            for p in message["content"]
            if p["type"] in ("text", "tool_result")
        ]
        if pieces:
            texts[index] = "\n".join(pieces)
    return texts


def matches(tokens: list[str], query: str) -> bool:
    """Every term of `query` (words, "phrases", prefix*) in `tokens`."""
    for term in re.findall(r'"[^"]*"\*?|\S+', query):
        prefix = term.endswith("*")
        words = fold_tokens(term.rstrip("*").strip('"'))
        if not words:
            continue
        found = False
        for start in range(len(tokens) - len(words) + 1):
            window = tokens[start : start + len(words)]
            head_ok = window[:-1] == words[:-1]
            last_ok = window[-1].startswith(words[-1]) if prefix else window[-1] == words[-1]
            if head_ok and last_ok:
                found = True
                break
        if not found:
            return False
    return True


@dataclass
class SearchCorpus:
    base: str
    sim: AgentSim
    workspaces: dict[str, str] = field(default_factory=dict)  # name -> workspace
    folders: dict[str, str] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)  # session id -> file

    def reference(
        self, query: str, workspace_ids: set[str] | None = None
    ) -> set[tuple[str, int | None]]:
        """(session id, message index or None for the title) of every text matching."""
        found = set()
        for session_id, path in self.paths.items():
            if workspace_ids is not None and session_id not in workspace_ids:
                continue
            try:
                with open(path, encoding="utf-8") as fh:
                    session = json.load(fh)
            except FileNotFoundError:
                continue
            for index, text in searchable_texts(session).items():
                if matches(fold_tokens(text), query):
                    found.add((session_id, index))
        return found

    def save(self, name: str, session: dict[str, Any]) -> str:
        path = self.sim.save(self.folders[name], session)
        self.paths[session["id"]] = path
        return path

    def load(self, session_id: str) -> dict[str, Any]:
        with open(self.paths[session_id], encoding="utf-8") as fh:
            return json.load(fh)


def text_message(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "content": [{"type": "text", "text": text}]}


def tool_turn(call_id: str, result: str, arguments: str) -> list[dict[str, Any]]:
    return [
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "text": "thinking about " + arguments, "signature": None},
                {"type": "tool_call", "id": call_id, "name": "bash", "arguments": arguments},
            ],
        },
        {
            "role": "tool",
            "content": [{"type": "tool_result", "tool_call_id": call_id, "content": result}],
        },
    ]


def sentence(rng: random.Random, planted: list[str]) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randrange(4, 12))]
    for word in planted:
        words.insert(rng.randrange(len(words) + 1), word)
    return " ".join(words)


def build(base: str, sessions: int = 24, seed: int = 7) -> SearchCorpus:
    rng = random.Random(seed)
    corpus = SearchCorpus(base, AgentSim(agent_global_root(base)))
    for name in ("alpha", "beta", "gamma"):
        workspace, folder = make_workspace(os.path.join(base, "ws"), name)
        corpus.workspaces[name] = workspace
        corpus.folders[name] = folder
    # A symlink to alpha: sessions whose directory is written through it belong to alpha too.
    os.symlink(corpus.workspaces["alpha"], os.path.join(base, "ws", "alpha-link"))
    for n in range(sessions):
        name = ("alpha", "beta", "gamma")[n % 3]
        directory = corpus.workspaces[name]
        if n % 6 == 0:
            directory = os.path.join(base, "ws", "alpha-link") if name == "alpha" else directory
        title = sentence(rng, rng.sample(WORDS, rng.randrange(2))) if n % 4 else None
        session = new_session(directory, title=title)
        for turn in range(rng.randrange(1, 5)):
            planted = rng.sample(WORDS, rng.randrange(3))
            if rng.random() < 0.3:
                planted.append(" ".join(PHRASE))
            if rng.random() < 0.2:
                planted.append(" ".join(reversed(PHRASE)))
            if rng.random() < 0.3:
                planted.append(rng.choice(ACCENTED))
            session["messages"].append(text_message("user", sentence(rng, planted)))
            # Words only in a thinking part or tool call arguments are not searchable.
            hidden = rng.choice(WORDS)
            result = sentence(rng, rng.sample(WORDS, rng.randrange(2)))
            session["messages"].extend(
                tool_turn(f"call_{turn}", result, json.dumps({"cmd": hidden}))
            )
            session["messages"].append(text_message("assistant", sentence(rng, [])))
        session["pages"] = ["conversation"] * len(session["messages"])
        corpus.save(name, session)
    return corpus


BUILD_TIMEOUT_S = 120.0


def wait_built(daemon: DaemonProcess, timeout: float = BUILD_TIMEOUT_S) -> dict[str, Any]:
    """The first build is the one thing `sync` does not wait for: poll `status` for its end."""
    with daemon.client() as client:
        client.sync()

        def built() -> dict[str, Any] | None:
            search = client.status()["search"]
            return search if search["pending"] == 0 and not search["building"] else None

        return wait_for(built, timeout, "the search index built")
