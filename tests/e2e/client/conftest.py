"""The client tests' agent (one workspace, one session of two turns) and a daemon serving it."""

from __future__ import annotations

import pytest

from tests.support.daemon import DaemonFactory, DaemonProcess
from tests.support.robust import Agent, agent_with


@pytest.fixture
def agent(base: str) -> Agent:
    return agent_with(base, {"alpha": (2,)})


@pytest.fixture
def daemon(agent: Agent, daemons: DaemonFactory) -> DaemonProcess:
    return daemons().start()
