"""pytest fixtures for a real S3 server (moto's server mode, see s3server.py).

tests/conftest.py loads this module as a plugin for the whole suite:

    pytest_plugins = ["tests.support.s3fixtures"]

`s3_server` is one server for the whole run (never stopped by a test); `fresh_s3_server` is a
server of a test's own, for tests that stop it or turn authentication on.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import pytest
from sessiond.logs import LOGGER_NAME

from tests.support.s3server import LogLines, S3Server


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes seconds; deselect with -m 'not slow'")


def _running_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(log_path=os.path.join(tmp_path_factory.mktemp("moto"), "moto.log"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto server for the whole run."""
    yield from _running_server(tmp_path_factory)


@pytest.fixture
def fresh_s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto server of the test's own, which it may stop and start (an outage)."""
    yield from _running_server(tmp_path_factory)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new empty bucket on the shared server, so tests never see each other's objects."""
    name = f"hist-{uuid.uuid4().hex[:16]}"
    s3_server.create_bucket(name)
    return name


@pytest.fixture
def sink_log() -> Iterator[LogLines]:
    logger = logging.getLogger(LOGGER_NAME)
    handler = LogLines()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)
