"""What travels on the indexer's queue besides file-system events: a call to run on its
thread, and the request to stop."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from sessiond.watch.fs_event import FsEvent


@dataclass
class Call:
    """`fn` to run on the indexer thread, after everything queued before it."""

    fn: Callable[[], Any]
    future: Future[Any]


@dataclass(frozen=True)
class Stop:
    """The indexer thread returns when it takes this; what is queued after it is not run."""


STOP = Stop()

QueueItem = FsEvent | Call | Stop
