"""Fan-out of index and upload events to `watch` clients.

Publishers may be on any thread; each subscriber is an asyncio queue on the server's loop. A
subscriber that falls too far behind is dropped (its connection is closed) rather than letting
its backlog grow without bound.
"""

from __future__ import annotations

import asyncio
from typing import Any

SUBSCRIBER_BACKLOG = 10_000


class _Closed:
    """Put on a dropped subscriber's queue in place of a message: its stream ends."""


_CLOSED = _Closed()


class EventHub:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._subscribers: set[asyncio.Queue[Any]] = set()

    def publish(self, message: dict[str, Any]) -> None:
        """Thread-safe: hand `message` to every subscriber."""
        if self._subscribers:
            self._loop.call_soon_threadsafe(self._deliver, message)

    def _deliver(self, message: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                self._subscribers.discard(queue)
                queue.get_nowait()
                queue.put_nowait(_CLOSED)

    def subscribe(self) -> asyncio.Queue[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue(SUBSCRIBER_BACKLOG)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Any]) -> None:
        self._subscribers.discard(queue)

    @staticmethod
    def is_closed(message: Any) -> bool:
        return isinstance(message, _Closed)
