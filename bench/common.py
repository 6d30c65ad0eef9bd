"""The benchmarks' progress lines (on stderr, so the figures on stdout stay clean) and their
JSON output."""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_json(path: str, results: dict[str, Any]) -> None:
    """The figures of a run as JSON (`--json-out`)."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2)
        fh.write("\n")
