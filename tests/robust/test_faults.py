"""Filesystem faults: each is logged and served around, never a crash, and once it is gone the
answers are right again.

Unreadable files, files deleted between their event and the read, a state folder that is
read-only or full, and a sessions folder removed, recreated, moved away and moved back.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator

import pytest
from sessionctl import Client

from tests.support.daemon import DaemonFactory, DaemonProcess, finish_all, wait_for
from tests.support.robust import (
    Agent,
    PlainUserDaemon,
    assert_every_answer,
    modes_apply_to_daemon,
)


@pytest.fixture
def agent(base: str) -> Agent:
    """Three workspaces of three sessions each."""
    agent = Agent(base, os.path.join(base, "ws"))
    for name in ("alpha", "beta", "gamma"):
        workspace = agent.add_workspace(name)
        for turns in (1, 2, 0):
            agent.save(agent.new(workspace, turns))
    return agent


@pytest.fixture
def plain_daemons(base: str) -> Iterator[Callable[..., PlainUserDaemon]]:
    made: list[DaemonProcess] = []

    def make(state_dir: str | None = None) -> PlainUserDaemon:
        extra = ["--state-dir", state_dir] if state_dir else []
        daemon = PlainUserDaemon(base, name=f"plain-{len(made)}", extra_args=extra)
        made.append(daemon)
        return daemon

    yield make
    finish_all(made)


def check(agent: Agent, client: Client, hidden: tuple[str, ...] = ()) -> None:
    """After `sync`, every answer (whole and windowed) is the cold scan's, less `hidden`."""
    client.sync(timeout=30)
    for window in (None, 1):
        assert_every_answer(
            client,
            agent.served(),
            agent.workspaces,
            [*agent.docs, "never-saved"],
            window=window,
            hidden=hidden,
        )


# --- files that cannot be read -----------------------------------------------------------------


def test_unreadable_session_files_are_served_around_then_served_again(
    agent: Agent, plain_daemons: Callable[..., PlainUserDaemon]
) -> None:
    alpha, beta = agent.workspaces[:2]
    # Unreadable before the daemon starts: the newest of alpha.
    newest_alpha = agent.save(agent.new(alpha, 2))
    os.chmod(newest_alpha, 0)
    daemon = plain_daemons().start()
    assert modes_apply_to_daemon(daemon), "the daemon can still read mode 000 files"
    with daemon.client() as client:
        check(agent, client, hidden=(newest_alpha,))
        assert client.resume(alpha)["path"] != newest_alpha
        # Unreadable while it runs: the newest of beta, after it was served.
        newest_beta = agent.save(agent.new(beta, 1))
        assert client.resume(beta, sync=True)["path"] == newest_beta
        os.chmod(newest_beta, 0)
        check(agent, client, hidden=(newest_alpha, newest_beta))
        # Saved again while unreadable, and made unreadable again at once.
        agent.save(agent.docs[os.path.basename(newest_beta).removesuffix(".json")], turn=True)
        os.chmod(newest_beta, 0)
        check(agent, client, hidden=(newest_alpha, newest_beta))
        # The fault goes: both are served as they are now.
        os.chmod(newest_alpha, 0o644)
        os.chmod(newest_beta, 0o644)
        check(agent, client)
        assert client.resume(alpha)["path"] == newest_alpha
        assert client.resume(beta)["path"] == newest_beta
    unreadable = {e["path"] for e in daemon.events_named("session_unreadable")}
    assert {newest_alpha, newest_beta} <= unreadable


def test_a_file_made_unreadable_while_stopped_is_not_served_from_the_cache(
    agent: Agent, plain_daemons: Callable[..., PlainUserDaemon]
) -> None:
    first = plain_daemons().start()
    with first.client() as client:
        check(agent, client)
    assert first.stop() == 0  # the header cache is saved now
    newest = agent.path_of(next(reversed(agent.docs)))
    os.chmod(newest, 0)
    again = plain_daemons(state_dir=first.state_dir).start()
    with again.client() as client:
        check(agent, client, hidden=(newest,))
        os.chmod(newest, 0o644)
        check(agent, client)


def test_unreadable_sessions_folder_is_served_around_then_served_again(
    agent: Agent, plain_daemons: Callable[..., PlainUserDaemon]
) -> None:
    daemon = plain_daemons().start()
    gamma = agent.workspaces[2]
    folder = agent.folders[gamma]
    hidden = tuple(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".json"))
    with daemon.client() as client:
        check(agent, client)
        os.chmod(folder, 0)
        client.rescan()  # no event says a folder's mode changed; a reconcile finds out
        check(agent, client, hidden=hidden)
        os.chmod(folder, 0o755)
        client.rescan()
        check(agent, client)


def test_files_deleted_between_their_event_and_the_read(
    agent: Agent, daemons: DaemonFactory
) -> None:
    # Saved and deleted at once, hundreds of times: the daemon gets each event after the file
    # is gone, or reads it just before. Every tenth survives; in-place writes deleted
    # mid-stream too.
    daemon = daemons().start()
    alpha, beta, _ = agent.workspaces
    with daemon.client() as client:
        for n in range(400):
            doc = agent.new(alpha if n % 2 else beta, turns=n % 3)
            path = agent.save(doc)
            if n % 10:
                os.unlink(path)
                del agent.docs[doc["id"]]
            if n % 7 == 0:
                codex = agent.new(beta, 1)
                agent.stamp(codex)
                os.unlink(agent.sim.import_codex(agent.folders[beta], codex))
        check(agent, client)
        assert client.ping()["ok"]


# --- the state folder ----------------------------------------------------------------------------


@pytest.fixture
def tmpfs(base: str) -> Iterator[Callable[[str, str], str]]:
    """Mount a small tmpfs (root only); unmounted at the end. Skips when mount is refused."""
    mounted: list[str] = []

    def mount(name: str, options: str) -> str:
        point = os.path.join(base, name)
        os.makedirs(point, exist_ok=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", point],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", point], check=False)


def remount(point: str, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", point], check=True)


def fill(folder: str) -> None:
    """Write until the file system is full."""
    fd = os.open(os.path.join(folder, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_state_folder_fault_is_logged_served_around_and_recovered(
    agent: Agent,
    daemons: DaemonFactory,
    tmpfs: Callable[[str, str], str],
    fault: str,
) -> None:
    state = tmpfs("state", "size=2m,mode=0700")  # room for the header cache and the search index
    if fault == "read-only":
        remount(state, "ro")
    else:
        fill(state)
    daemon = daemons(extra_args=["--state-dir", state]).start()
    with daemon.client() as client:
        wait_for(
            lambda: daemon.events_named("header_cache_save_failed"),
            timeout=10,
            what="the failed header-cache save to be logged",
        )
        # Served as if nothing were wrong, saves included.
        for workspace in agent.workspaces:
            agent.save(agent.new(workspace, 1))
        check(agent, client)
        # The fault goes; the next save of the cache (at the latest at stop) succeeds.
        if fault == "read-only":
            remount(state, "rw")
        else:
            os.unlink(os.path.join(state, "filler"))
        agent.save(agent.new(agent.workspaces[0], 2))
        check(agent, client)
    assert daemon.stop() == 0
    names = os.listdir(state)
    assert "headers.msgpack" in names
    assert [name for name in names if ".tmp" in name] == []  # no temp file left behind
    again = daemons(extra_args=["--state-dir", state]).start()
    with again.client() as client:
        check(agent, client)
    assert not again.events_named("header_cache_save_failed")
    assert not again.events_named("header_cache_rebuilt")  # the cache it wrote is whole


# --- sessions folders that go away ---------------------------------------------------------------


def test_sessions_folder_removed_and_recreated(agent: Agent, daemons: DaemonFactory) -> None:
    daemon = daemons().start()
    alpha = agent.workspaces[0]
    folder = agent.folders[alpha]
    with daemon.client() as client:
        check(agent, client)
        shutil.rmtree(folder)
        check(agent, client)  # its sessions are gone (`get` of each: not_found)
        os.makedirs(folder)  # recreated empty
        check(agent, client)
        agent.save(agent.new(alpha, 1))  # and saved into
        check(agent, client)
        for n in range(20):  # removed and recreated at once, again and again
            shutil.rmtree(folder)
            if n % 2:
                os.makedirs(folder)
            agent.save(agent.new(alpha, n % 3))
            check(agent, client)
    assert daemon.events_named("root_gone")


def test_sessions_folder_moved_away_and_back(agent: Agent, daemons: DaemonFactory) -> None:
    daemon = daemons().start()
    beta = agent.workspaces[1]
    folder = agent.folders[beta]
    away = folder + ".away"
    with daemon.client() as client:
        check(agent, client)
        for n in range(10):
            os.rename(folder, away)
            check(agent, client)  # its sessions are gone with it
            if n % 2:  # a new folder where it was, saved into
                agent.save(agent.new(beta, 1))
                check(agent, client)
                shutil.rmtree(folder)
            os.rename(away, folder)
            check(agent, client)  # and back again, every session as it was
            agent.save(agent.docs[next(iter(agent.docs))], turn=True)
            check(agent, client)
    assert len(daemon.events_named("root_gone")) >= 10


def test_workspace_renamed_away_and_back(agent: Agent, daemons: DaemonFactory) -> None:
    # The sessions folder's parent is what moves (the user renames the project): no event
    # reaches the sessions folder's own watch, which follows it to the new name.
    daemon = daemons().start()
    gamma = agent.workspaces[2]
    renamed = gamma + "-renamed"
    with daemon.client() as client:
        check(agent, client)
        for n in range(6):
            os.rename(gamma, renamed)
            check(agent, client)  # not at its path any more: its sessions are not served
            if n % 2:  # a session saved meanwhile into the renamed project
                agent.sim.save(
                    os.path.join(renamed, ".codetether-agent", "sessions"),
                    agent.new(gamma, 1),
                    mtime_ns=agent.tick(),
                )
                check(agent, client)
            os.rename(renamed, gamma)
            check(agent, client)  # back: all of them, the one saved meanwhile too
        # Away and back between two syncs, with saves while it was away.
        for _ in range(3):
            os.rename(gamma, renamed)
            agent.sim.save(
                os.path.join(renamed, ".codetether-agent", "sessions"),
                agent.docs[next(i for i in agent.docs if agent.path_of(i).startswith(gamma))],
                mtime_ns=agent.tick(),
            )
            os.rename(renamed, gamma)
            check(agent, client)
        # Away, and a new project made where it was, saved into.
        os.rename(gamma, renamed)
        os.makedirs(os.path.join(gamma, ".git"))
        agent.save(agent.new(gamma, 2))
        check(agent, client)
