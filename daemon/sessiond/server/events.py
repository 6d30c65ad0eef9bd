"""Fan-out of index and upload events to `watch` clients.

Publishers may be on any thread; each subscriber is an asyncio queue on the server's loop. A
subscriber that falls too far behind is dropped (its connection is closed) rather than letting
its backlog grow without bound.
"""

from __future__ import annotations

import asyncio
from enum import Enum
from typing import Any

SUBSCRIBER_BACKLOG = 10_000


class StreamEnd(Enum):
    """Why the hub ends a subscriber's stream; queued in place of the next event."""

    TOO_SLOW = "too_slow"  # its backlog reached SUBSCRIBER_BACKLOG


EventMessage = dict[str, Any]
Delivery = EventMessage | StreamEnd
"""What a subscriber's queue holds: event messages, then perhaps the end of its stream."""


class EventHub:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._subscribers: set[asyncio.Queue[Delivery]] = set()

    def publish(self, message: EventMessage) -> None:
        """Thread-safe: hand `message` to every subscriber."""
        if self._subscribers:
            self._loop.call_soon_threadsafe(self._deliver, message)

    def _deliver(self, message: EventMessage) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                self._subscribers.discard(queue)
                queue.get_nowait()  # the oldest event makes room for the end
                queue.put_nowait(StreamEnd.TOO_SLOW)

    def subscribe(self) -> asyncio.Queue[Delivery]:
        queue: asyncio.Queue[Delivery] = asyncio.Queue(SUBSCRIBER_BACKLOG)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Delivery]) -> None:
        self._subscribers.discard(queue)
