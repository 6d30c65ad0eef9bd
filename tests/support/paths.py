"""Where the suite's own files are, whatever folder a test module sits in."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent  # the checkout: docs/, packaging/
DATA = TESTS / "data"  # the synthetic sample files
FUZZ = TESTS / "fuzz"  # the atheris harnesses
