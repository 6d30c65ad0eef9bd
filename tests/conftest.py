"""Fixtures shared by every directory of the suite: real `sessiond` subprocesses, a corpus of
sessions, and (as a plugin) the S3 server."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.corpus import Corpus, build_corpus
from tests.support.daemon import DaemonFactory, DaemonProcess, finish_all

# The S3 fixtures (a moto server started only when a test asks for one) for every directory.
pytest_plugins = ["tests.support.s3fixtures"]

# Files in the agent's folders that sessiond may write (README, "The agent's own index files")
# or that are its own
# transient `sync` cookies; everything else there belongs to the agent.
DAEMON_MAY_WRITE = (".workspace_index.json", ".listing_cache.json")
COOKIE_PREFIX = ".sessiond-cookie-"


@pytest.fixture
def base(tmp_path: Path) -> str:
    """The test's folder, resolved: paths the daemon reports are resolved ones."""
    return os.path.realpath(tmp_path)


@pytest.fixture
def daemons(base: str) -> Iterator[DaemonFactory]:
    """Make (unstarted) daemons; at the end each still running is stopped with SIGTERM and
    must exit 0, and none may have logged an error the test did not expect."""
    made: list[DaemonProcess] = []

    def make(**kwargs: Any) -> DaemonProcess:
        kwargs.setdefault("name", f"sessiond-{len(made)}")
        daemon = DaemonProcess(base, **kwargs)
        made.append(daemon)
        return daemon

    yield make
    finish_all(made)


def fingerprint(root: str) -> dict[str, tuple[int, int, str]]:
    """Every agent-owned file under `root`: size, mtime and content hash."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            if name in DAEMON_MAY_WRITE or name.startswith(COOKIE_PREFIX) or name.endswith(".log"):
                continue
            path = os.path.join(folder, name)
            st = os.lstat(path)
            with open(path, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()
            found[path] = (st.st_size, st.st_mtime_ns, digest)
    return found


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    """The corpus, built once per module and shared by its tests, which only read it. At the
    end every agent file must be as it was: sessiond never writes, moves or deletes a session
    file, a pointer or the agent's litter (README, "The agent's own index files")."""
    corpus = build_corpus(os.path.realpath(tmp_path_factory.mktemp("corpus")))
    before = fingerprint(os.path.join(corpus.base))
    yield corpus
    after = fingerprint(os.path.join(corpus.base))
    assert after == before, "files of the agent changed"


@pytest.fixture
def fresh_corpus(base: str) -> Corpus:
    """A corpus of the test's own, for a test that changes it."""
    return build_corpus(base)


@pytest.fixture
def corpus_daemon(corpus: Corpus, daemons: DaemonFactory) -> DaemonProcess:
    """A daemon serving the corpus: discovery on (registry), plus the --sessions-dir folder."""
    return daemons(env_base=corpus.base, sessions_dirs=[corpus.extra_dir]).start()


@pytest.fixture(scope="module")
def shared_daemon(
    corpus: Corpus, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonProcess]:
    """One corpus daemon for a whole module of tests that leave it serving."""
    daemon = DaemonProcess(
        os.path.realpath(tmp_path_factory.mktemp("shared-daemon")),
        env_base=corpus.base,
        sessions_dirs=[corpus.extra_dir],
    )
    try:
        yield daemon.start()
    finally:
        finish_all([daemon])
