"""Small types of the indexer's work: a call to run on its thread, and what a scan did."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any


@dataclass
class Call:
    """`fn` to run on the indexer thread, after everything queued before it."""

    fn: Callable[[], Any]
    future: Future[Any]


@dataclass
class Counts:
    """What a scan or rescan did to the index."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    invalid: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)
