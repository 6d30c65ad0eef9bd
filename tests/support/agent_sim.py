"""A stand-in for the codetether agent that writes files exactly as the agent does.

Used by the tests and by bench/ to build corpora: compact session JSON written to `<id>.json.tmp`
and renamed over `<id>.json`, two journal lines per save, the location pointer, the workspace
index upsert, and (for Codex imports) pretty JSON written in place. See docs/agent-files.md:
"Saving", "The session document", "The workspace index", "The journal".
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from sessionctl.agent import canonicalize


def chrono_time(moment: dt.datetime) -> str:
    """RFC 3339 as chrono's `AutoSi` prints it: fraction omitted when zero, else 3/6/9 digits."""
    moment = moment.astimezone(dt.UTC)
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    micros = moment.microsecond
    if micros == 0:
        return base + "Z"
    if micros % 1000 == 0:
        return f"{base}.{micros // 1000:03d}Z"
    return f"{base}.{micros:06d}Z"


def compact(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def expected_history(session: dict[str, Any]) -> bytes:
    """The history object of `session` (docs/agent-files.md, "The history object"): each
    message compact, one per line. Written apart from sessiond.sink.history, to check it."""
    return b"".join(compact(message) + b"\n" for message in session["messages"])


def new_session(
    directory: str | None,
    *,
    session_id: str | None = None,
    title: str | None = None,
    agent: str = "build",
    model: str | None = "zai/glm-5",
    when: dt.datetime | None = None,
) -> dict[str, Any]:
    session_id = session_id or str(uuid.uuid4())
    now = chrono_time(when or dt.datetime.now(dt.UTC))
    return {
        "id": session_id,
        "title": title,
        "created_at": now,
        "updated_at": now,
        "metadata": {
            "directory": directory,
            "model": model,
            "knowledge_snapshot": None,
            "provenance": {
                "provenance_id": "ctprov_" + uuid.uuid4().hex,
                "session_id": session_id,
                "task_id": None,
                "run_id": None,
                "attempt_id": None,
                "issued_at": now,
                "identity": {
                    "tenant_id": None,
                    "agent_identity_id": None,
                    "agent_name": agent,
                    "origin": "local_cli",
                    "worker_id": None,
                    "key_id": None,
                    "github_installation_id": None,
                    "github_app_id": None,
                },
            },
            "auto_apply_edits": False,
            "allow_network": False,
            "slash_autocomplete": False,
            "use_worktree": False,
            "shared": False,
            "share_url": None,
            "rlm": {
                "mode": "auto",
                "threshold": 0.35,
                "max_iterations": 15,
                "max_subcalls": 50,
                "runtime": "rust",
                "root_model": None,
                "subcall_model": None,
                "history_trigger_messages": 0,
            },
            "context_policy": {"policy": "incremental", "budget_tokens": 0},
            "delegation": {
                "beliefs": {},
                "config": {
                    "gamma": 0.5,
                    "delta": 0.05,
                    "kappa": 2.0,
                    "lambda": 1.0,
                    "enabled": False,
                },
            },
            "run_checkpoint": None,
        },
        "agent": agent,
        "messages": [],
        "pages": [],
        "summary_index": {"tree": [], "generation": 0, "lru_order": []},
        "tool_uses": [],
        "usage": {
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "total_tokens": 0,
            "cache_read_tokens": None,
            "cache_write_tokens": None,
        },
    }


_PAGE = {"system": "bootstrap", "developer": "bootstrap", "tool": "evidence"}


def add_turn(session: dict[str, Any], rng: random.Random, text_bytes: int = 200) -> None:
    """Append a user message, an assistant tool call, its tool result and an answer."""
    call_id = f"call_{len(session['tool_uses'])}"
    filler = "".join(rng.choice('abcdefghij klmnop\n\t"\\/é✓') for _ in range(text_bytes))
    turn = [
        {"role": "user", "content": [{"type": "text", "text": "please " + filler[:80]}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "text": "plan", "signature": None},
                {
                    "type": "tool_call",
                    "id": call_id,
                    "name": "bash",
                    "arguments": json.dumps({"command": "ls"}),
                },
            ],
        },
        {
            "role": "tool",
            "content": [{"type": "tool_result", "tool_call_id": call_id, "content": filler}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": filler[: text_bytes // 4]}]},
    ]
    for message in turn:
        session["messages"].append(message)
        is_result = any(p["type"] == "tool_result" for p in message["content"])
        session["pages"].append(
            _PAGE.get(message["role"], "evidence" if is_result else "conversation")
        )
    session["tool_uses"].append(
        {"id": call_id, "name": "bash", "input": "{}", "output": filler[:64], "success": True}
    )
    session["updated_at"] = chrono_time(dt.datetime.now(dt.UTC))


BIG_TEXT = ('é✓/"\\\n\t' + "x" * 1000) * 1000
"""~1 MB of message text, JSON escapes included (a quote, a backslash, a newline, a tab and
non-ASCII characters in every KB)."""


def big_session(
    directory: str | None, messages: int, *, title: str | None = None, pages: bool = False
) -> dict[str, Any]:
    """A new session of `messages` messages of BIG_TEXT each (~1 MB), assistant and user in
    turn: `messages` MB of history. With `pages`, each message gets its page kind."""
    session = new_session(directory, title=title)
    for number in range(messages):
        role = "user" if number % 2 else "assistant"
        session["messages"].append({"role": role, "content": [{"type": "text", "text": BIG_TEXT}]})
        if pages:
            session["pages"].append("conversation")
    return session


@dataclass
class AgentSim:
    """One agent installation: where its global registry lives and how it saves."""

    global_root: str
    write_pointer: bool = True
    write_index: bool = True
    write_journal: bool = True
    _hashes: dict[str, int] = field(default_factory=dict)

    @property
    def registry(self) -> str:
        return os.path.join(self.global_root, "session-locations")

    def save(
        self, sessions_dir: str, session: dict[str, Any], *, mtime_ns: int | None = None
    ) -> str:
        """`Session::save`: tmp + rename, pointer, journal, workspace index (docs/agent-files.md,
        "Saving")."""
        os.makedirs(sessions_dir, exist_ok=True)
        path = os.path.join(sessions_dir, f"{session['id']}.json")
        tmp = path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(compact(session))
        if mtime_ns is not None:
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.rename(tmp, path)
        if self.write_pointer:
            self.write_location(session["id"], path)
        if self.write_journal:
            self._journal(sessions_dir, session["id"])
        directory = session["metadata"].get("directory")
        if self.write_index and directory:
            self._upsert_index(sessions_dir, canonicalize(directory), session["id"])
        return path

    def write_location(self, session_id: str, path: str) -> None:
        os.makedirs(self.registry, exist_ok=True)
        with open(os.path.join(self.registry, f"{session_id}.path"), "wb") as fh:
            fh.write(os.path.abspath(path).encode())

    def import_codex(self, sessions_dir: str, session: dict[str, Any]) -> str:
        """`persist_imported_session`: pretty JSON written in place, no rename."""
        os.makedirs(sessions_dir, exist_ok=True)
        path = os.path.join(sessions_dir, f"{session['id']}.json")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(session, ensure_ascii=False, indent=2))
        return path

    def _journal(self, sessions_dir: str, session_id: str) -> None:
        now = chrono_time(dt.datetime.now(dt.UTC))
        lines = compact({"phase": "staged", "txn": 0, "at": now, "op": {"op": "save"}}) + b"\n"
        lines += compact({"phase": "committed", "txn": 0, "at": now}) + b"\n"
        fd = os.open(
            os.path.join(sessions_dir, f"{session_id}.journal.jsonl"),
            os.O_WRONLY | os.O_APPEND | os.O_CREAT,
            0o644,
        )
        try:
            os.write(fd, lines)
        finally:
            os.close(fd)

    def _upsert_index(self, sessions_dir: str, workspace: str, session_id: str) -> None:
        index_path = os.path.join(sessions_dir, ".workspace_index.json")
        try:
            with open(index_path, "rb") as fh:
                entries = json.load(fh)["entries"]
            if not isinstance(entries, dict):
                entries = {}
        except (OSError, ValueError, KeyError, TypeError):
            entries = {}
        entries[workspace] = session_id
        tmp = index_path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(compact({"entries": entries}))
        os.rename(tmp, index_path)


def make_workspace(base: str, name: str) -> tuple[str, str]:
    """A git checkout `base/name` and its sessions folder (docs/agent-files.md, "Folders")."""
    workspace = os.path.join(base, name)
    os.makedirs(os.path.join(workspace, ".git"), exist_ok=True)
    return workspace, os.path.join(workspace, ".codetether-agent", "sessions")


def write_agent_litter(sessions_dir: str, session_id: str) -> None:
    """The non-session files the agent leaves beside sessions (docs/agent-files.md, "Files in a
    sessions folder")."""
    os.makedirs(os.path.join(sessions_dir, "rlm"), exist_ok=True)
    os.makedirs(os.path.join(sessions_dir, "recall", "sessions"), exist_ok=True)
    files = {
        f"{session_id}.checkpoint.json": json.dumps({"reason": "max_steps_exhausted"}, indent=2),
        f"{session_id}.tasks.jsonl": '{"kind":"goal_set"}\n',
        ".listing_cache.json": '{"entries":{}}',
        f"{session_id}.json.tmp": '{"id":"torn',
        os.path.join("rlm", f"{session_id}.json"): '{"schema_version":1}',
        os.path.join("recall", "sessions", f"{session_id}.json"): "{}",
    }
    for name, text in files.items():
        with open(os.path.join(sessions_dir, name), "w", encoding="utf-8") as fh:
            fh.write(text)
