"""Shared pieces of the robustness suite (tests/robust/): an agent that saves with
explicit, never-repeating mtimes and `updated_at` instants, a check of every answer against the
cold-scan reference, a daemon config file, a daemon that file permissions apply to even
when the tests run as root, and a kernel limit lowered for real.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import os
import random
import resource
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from sessionctl import Client, DaemonError

from tests.support import reference
from tests.support.agent_sim import AgentSim, add_turn, chrono_time, make_workspace, new_session
from tests.support.compare import assert_answer, assert_listing
from tests.support.corpus import agent_env, agent_global_root
from tests.support.daemon import DaemonProcess

T1 = 1_750_000_000 * 10**9
"""Explicit mtimes start here: the newest file never depends on the clock or its resolution."""
SECOND = 10**9
UPDATED_BASE = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
EVERYTHING = 1_000_000
"""A `list` limit larger than any listing in these tests."""


def agent_with(base: str, scene: dict[str, tuple[int, ...]]) -> Agent:
    """An agent with workspaces under `base/ws`, each saved into once per entry of its tuple (the
    turns of that session): `{"alpha": (1, 2)}` is one workspace with two sessions."""
    agent = Agent(base, os.path.join(base, "ws"))
    for name, sessions in scene.items():
        workspace = agent.add_workspace(name)
        for turns in sessions:
            agent.save(agent.new(workspace, turns))
    return agent


@dataclass
class Agent:
    """Workspaces under `root`, saved into by one agent whose registry lives under `base`."""

    base: str
    root: str
    rng: random.Random = field(default_factory=lambda: random.Random(5))
    sim: AgentSim = field(init=False)
    workspaces: list[str] = field(default_factory=list)
    folders: dict[str, str] = field(default_factory=dict)
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """id -> the session as last saved (in whichever folder)."""
    clock: int = T1
    updates: int = 0

    def __post_init__(self) -> None:
        self.sim = AgentSim(agent_global_root(self.base))

    def add_workspace(self, name: str) -> str:
        workspace, folder = make_workspace(self.root, name)
        self.workspaces.append(workspace)
        self.folders[workspace] = folder
        return workspace

    def tick(self) -> int:
        self.clock += SECOND
        return self.clock

    def stamp(self, doc: dict[str, Any]) -> None:
        """A fresh `updated_at`: no two saves share an instant, so `list` order is defined."""
        self.updates += 1
        doc["updated_at"] = chrono_time(UPDATED_BASE + dt.timedelta(milliseconds=self.updates))

    def new(self, workspace: str, turns: int = 1, session_id: str | None = None) -> dict[str, Any]:
        doc = new_session(workspace, session_id=session_id)
        for _ in range(turns):
            add_turn(doc, self.rng, 40)
        return doc

    def save(self, doc: dict[str, Any], folder: str | None = None, turn: bool = False) -> str:
        """`Session::save` into `folder` (default: the folder of its directory's workspace)."""
        if turn:
            add_turn(doc, self.rng, 40)
        self.stamp(doc)
        self.docs[doc["id"]] = doc
        folder = folder or self.folders[doc["metadata"]["directory"]]
        return self.sim.save(folder, doc, mtime_ns=self.tick())

    def path_of(self, session_id: str, workspace: str | None = None) -> str:
        doc = self.docs[session_id]
        folder = self.folders[workspace or doc["metadata"]["directory"]]
        return os.path.join(folder, f"{session_id}.json")

    def served(self) -> list[str]:
        """The folders a cold scan reads: the registry's and those of the workspaces asked
        about (every workspace here is), as the reference resolves them."""
        return reference.served_folders(agent_env(self.base), asked=self.workspaces)


def expect_not_found(call: Any, *args: Any, **kwargs: Any) -> None:
    try:
        answer = call(*args, **kwargs)
    except DaemonError as exc:
        assert exc.code == "not_found", exc
        return
    raise AssertionError(f"expected not_found for {args}, got {answer}")


def assert_every_answer(
    client: Client,
    folders: Iterable[str],
    workspaces: Iterable[str],
    ids: Iterable[str],
    window: int | None = None,
    hidden: Iterable[str] = (),
) -> int:
    """Every resume, get and list the daemon gives equals the cold scan of `folders` now,
    leaving out the files at `hidden` (ones the daemon's user cannot read). Each workspace is
    asked with `sync: true` first, so its own sessions folder is served even
    if it appeared a moment ago. Returns how many answers were compared."""
    snapshot = reference.Snapshot(folders)
    unreadable = set(hidden)
    snapshot.sessions = [s for s in snapshot.sessions if s.path not in unreadable]
    compared = 0
    for workspace in workspaces:
        expected = snapshot.resume(workspace, window)
        if expected is None:
            expect_not_found(client.resume, workspace, window=window, sync=True)
        else:
            assert_answer(client.resume(workspace, window=window, sync=True), expected)
        assert_listing(
            client.list(workspace, limit=EVERYTHING), snapshot.list(workspace, EVERYTHING)
        )
        compared += 2
    for session_id in ids:
        expected = snapshot.get(session_id, window)
        if expected is None:
            expect_not_found(client.get, session_id, window=window)
        else:
            assert_answer(client.get(session_id, window=window), expected)
        compared += 1
    assert_listing(client.list(limit=EVERYTHING), snapshot.list(None, EVERYTHING))
    return compared + 1


def config_args(base: str, name: str, settings: Mapping[str, float | int | str]) -> list[str]:
    """`--config FILE` for a TOML file holding `settings` (top-level keys only)."""
    path = os.path.join(base, f"{name}.toml")
    with open(path, "w", encoding="utf-8") as fh:
        for key, value in settings.items():
            fh.write(f"{key} = {value!r}\n".replace("'", '"'))
    return ["--config", path]


# --- a daemon that file permissions apply to ------------------------------------------------

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2


def _drop_permission_bypass() -> None:
    """Runs in the child before exec: drop the capabilities that let root ignore file modes
    from the bounding set, so the exec'd daemon (still uid 0, so the test can talk to it over
    the socket's peer-uid check) cannot read a mode 000 file or write a read-only folder."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


class PlainUserDaemon(DaemonProcess):
    """A daemon for which mode bits count, as they do for every user but root.

    As root, `chmod 000` stops nobody: root reads anything. Running the daemon as another uid
    is not possible here (the interpreter lives under /root, mode 0700) and would make the
    test's own client a foreign peer. Instead the daemon runs as the same uid without
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH: the kernel then checks file modes for it exactly
    as for an ordinary user. Not root: nothing to drop, modes already apply."""

    preexec = staticmethod(_drop_permission_bypass) if os.getuid() == 0 else None


class OpenFilesDaemon(DaemonProcess):
    """A daemon started under an open-files limit (RLIMIT_NOFILE) of `soft`/`hard`."""

    def __init__(self, base: str, soft: int, hard: int, **kwargs: Any) -> None:
        super().__init__(base, **kwargs)
        self.preexec = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    def open_files_limit(self) -> int:
        """The soft limit the running daemon has now."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/limits", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
        raise AssertionError("no open-files line in /proc/PID/limits")


def admitted_client(daemon: DaemonProcess) -> Client | None:
    """A library client whose connection the daemon admitted (its `ping` answered), or None:
    for waiting, with `wait_for`, until a capped daemon has a place for one more."""
    client = daemon.client()
    try:
        client.ping()
    except Exception:
        client.close()
        return None
    return client


Result = TypeVar("Result")


class KernelLimit:
    """A /proc/sys setting of the whole system, lowered only for a moment and always put back
    (meanwhile it applies to every program, not only to the daemon)."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path) as fh:
            self.old = fh.read().strip()

    def restore(self) -> None:
        with open(self.path, "w") as fh:
            fh.write(self.old)

    def lowered(self, value: int, action: Callable[[], Result]) -> Result:
        """Run `action` with the setting at `value`, then give the old one back."""
        with open(self.path, "w") as fh:
            fh.write(str(value))
        try:
            return action()
        finally:
            self.restore()


@contextlib.contextmanager
def kernel_limit(path: str, without: str) -> Iterator[KernelLimit]:
    """A fixture's body: the limit at `path`, put back at the end; skips the test, saying
    `without` what, when it cannot be written (not root, or a read-only /proc)."""
    try:
        limit = KernelLimit(path)
        limit.restore()  # writable?
    except OSError as exc:
        pytest.skip(f"{path} is not writable here ({exc.strerror}): {without}")
    try:
        yield limit
    finally:
        limit.restore()


def modes_apply_to_daemon(daemon: DaemonProcess) -> bool:
    """True when the running daemon really cannot read a mode 000 file (checked, not assumed:
    its capability sets are read from /proc)."""
    assert daemon.proc is not None
    with open(f"/proc/{daemon.proc.pid}/status", encoding="ascii") as fh:
        caps = {k: v.strip() for k, _, v in (line.partition(":") for line in fh)}
    effective = int(caps["CapEff"], 16)
    return not effective & (1 << CAP_DAC_OVERRIDE | 1 << CAP_DAC_READ_SEARCH)
