"""The history sink benchmarks' pieces (bench_sink.py and its figure 4, sink_delta.py): sessions
saved as the agent saves them with the clock read at the rename, the sink daemon, and its
`watch` stream stamped on arrival. No figures are chosen here."""

from __future__ import annotations

import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sessionctl import Client
from sessionctl.agent import canonicalize
from sessionctl.client import DaemonUnreachable

from bench.daemon import Daemon, start_daemon
from tests.support.agent_sim import (
    AgentSim,
    add_turn,
    compact,
    expected_history,
    make_workspace,
    new_session,
)

BUCKET = "sessiond-bench"
PREFIX = "history/"
BIG_DEADLINE_S = 900.0  # the big session's upload_done after its save
FLUSH_TIMEOUT_S = 60.0
MIB = 1 << 20


# --- sessions as the agent saves them --------------------------------------------------------


class Tracked:
    """A session document and the size of its history object (docs/agent-files.md, "The
    history object": each message compact, one per line), kept up to date as messages are
    appended."""

    def __init__(self, session: dict[str, Any]) -> None:
        self.session = session
        self.body_bytes = 0
        self._counted = 0
        self.refresh()

    @property
    def id(self) -> str:
        return str(self.session["id"])

    def refresh(self) -> int:
        messages = self.session["messages"]
        for message in messages[self._counted :]:
            self.body_bytes += len(compact(message)) + 1
        self._counted = len(messages)
        return self.body_bytes

    def expected_body(self) -> bytes:
        return expected_history(self.session)


@dataclass(frozen=True)
class Saved:
    before_rename_ns: int  # monotonic clock read just before the rename
    mtime_ns: int
    file_bytes: int
    body_bytes: int


class Writer:
    """Saves sessions into one workspace exactly as `AgentSim.save` does (compact JSON to
    `<id>.json.tmp`, rename, registry pointer, journal lines, workspace index), reading the
    clock just before the rename."""

    def __init__(self, work: str) -> None:
        self.workspace, self.sessions_dir = make_workspace(work, "proj")
        os.makedirs(self.sessions_dir, exist_ok=True)
        self.sim = AgentSim(os.path.join(work, "agent-global"))

    def new(self, rng: random.Random, min_bytes: int, text_bytes: int = 2000) -> Tracked:
        session = new_session(self.workspace)
        while len(compact(session)) < min_bytes:
            add_turn(session, rng, text_bytes=text_bytes)
        return Tracked(session)

    def save(self, tracked: Tracked) -> Saved:
        session = tracked.session
        path = os.path.join(self.sessions_dir, f"{session['id']}.json")
        tmp = path + ".tmp"
        data = compact(session)
        with open(tmp, "wb") as fh:
            fh.write(data)
            mtime_ns = os.fstat(fh.fileno()).st_mtime_ns
        before = time.monotonic_ns()
        os.rename(tmp, path)
        self.sim.write_location(session["id"], path)
        self.sim._journal(self.sessions_dir, session["id"])
        self.sim._upsert_index(self.sessions_dir, canonicalize(self.workspace), session["id"])
        return Saved(before, mtime_ns, len(data), tracked.refresh())


def text_pool(rng: random.Random, chars: int) -> str:
    """Tool-output-like text: code and log tokens, quotes, backslashes, tabs, non-ASCII."""
    tokens = [
        "def ", "return ", "self.", "value", "path", "(", ")", ":", ", ", " = ", "\n", "    ",
        "\t", '"', "\\", "/usr/lib/", "error: ", "ok ", "0x1f", "42", "é", "✓", "—", "[]", "{}",
    ]  # fmt: skip
    parts: list[str] = []
    size = 0
    while size < chars:
        token = rng.choice(tokens)
        parts.append(token)
        size += len(token)
    return "".join(parts)


def big_session(writer: Writer, rng: random.Random, min_body: int, message_chars: int) -> Tracked:
    """A session whose history is at least `min_body` bytes: turns shaped like the agent's
    whose tool result is one large text (a big file read or command output)."""
    pool = text_pool(rng, 1 << 18)
    doubled = pool + pool
    slice_chars = 1 << 16
    tracked = Tracked(new_session(writer.workspace))
    while tracked.body_bytes < min_body:
        add_turn(tracked.session, rng, text_bytes=400)
        pieces = []
        for _ in range(max(1, message_chars // slice_chars)):
            start = rng.randrange(len(pool))
            pieces.append(doubled[start : start + slice_chars])
        result = tracked.session["messages"][-2]
        result["content"][0]["content"] = "".join(pieces)
        tracked.refresh()
    return tracked


# --- the daemon and its event stream ---------------------------------------------------------


def sink_daemon(work: str, env: dict[str, str], sock: str, sessions_dir: str) -> Daemon:
    """The daemon of these figures: one sessions folder, no discovery, started and ready."""
    state = os.path.join(work, "state")
    return start_daemon(work, "sessiond", env, state, [sessions_dir], discover=False, socket=sock)


class Events:
    """A `watch` subscription read on a thread of its own; each event is stamped with the
    monotonic clock when its line arrives, then handed over through a queue."""

    def __init__(self, sock: str) -> None:
        stream = Client(socket=sock, timeout=30).watch()  # subscribed once this returns
        self._queue: queue.Queue[tuple[int, dict[str, Any]] | None] = queue.Queue()
        self.seen: list[tuple[int, dict[str, Any]]] = []
        thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        thread.start()

    def _read(self, stream: Iterator[dict[str, Any]]) -> None:
        try:
            for event in stream:
                self._queue.put((time.monotonic_ns(), event))
        except DaemonUnreachable:
            pass  # the daemon stopped
        finally:
            self._queue.put(None)

    def wait(
        self, match: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> tuple[int, dict[str, Any]]:
        """The first event from now on that `match`es, with its arrival time (monotonic ns).
        An `upload_failed` on the way is an error: every figure here assumes none."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {what} within {timeout:.0f} s")
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                raise TimeoutError(f"no {what} within {timeout:.0f} s") from None
            if item is None:
                raise RuntimeError(f"the watch stream ended while waiting for {what}")
            self.seen.append(item)
            event = item[1]
            if event.get("event") == "upload_failed":
                raise RuntimeError(f"upload_failed while waiting for {what}: {event}")
            if match(event):
                return item

    def upload_done(self, tracked: Tracked, timeout: float) -> tuple[int, dict[str, Any]]:
        """The `upload_done` of the session's current content. Its history only grows, so the
        body size names the content."""
        session_id, size = tracked.id, tracked.body_bytes
        return self.wait(
            lambda e: (
                e.get("event") == "upload_done"
                and e.get("session_id") == session_id
                and e.get("bytes") == size
            ),
            timeout,
            f"upload_done for {session_id} ({size} bytes)",
        )

    def saved_at(self, since: int, session_id: str, mtime_ns: int) -> int | None:
        """Arrival of the `session_saved` for this file version among the events seen."""
        for at, event in self.seen[since:]:
            if (
                event.get("event") == "session_saved"
                and event.get("session_id") == session_id
                and event.get("mtime_ns") == mtime_ns
            ):
                return at
        return None
