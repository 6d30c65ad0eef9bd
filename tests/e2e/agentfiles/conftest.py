"""The scene the harness tests (test_acceptance.py, test_edges.py) start from."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.agentfiles_scenes import Scene


@pytest.fixture
def scene(tmp_path: Path) -> Scene:
    """A private HOME and XDG_DATA_HOME, and the shared sessions folder (`Scene.make`)."""
    return Scene.make(tmp_path)
