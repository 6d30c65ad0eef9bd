"""The `watch` fan-out (server/events.py): every subscriber gets every event, and one that falls
SUBSCRIBER_BACKLOG behind gets the end of its stream instead of an unbounded backlog."""

from __future__ import annotations

import asyncio

from sessiond.server.events import SUBSCRIBER_BACKLOG, EventHub, StreamEnd


async def delivered(loop: asyncio.AbstractEventLoop) -> None:
    """Return once every publish made before has been delivered (the loop runs them in order)."""
    done = loop.create_future()
    loop.call_soon_threadsafe(done.set_result, None)
    await done


def test_a_subscriber_too_far_behind_gets_the_end_and_no_more_events() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        hub = EventHub(loop)
        slow, keeping_up = hub.subscribe(), hub.subscribe()
        for n in range(SUBSCRIBER_BACKLOG):
            hub.publish({"event": "session_saved", "n": n})
        await delivered(loop)
        while not keeping_up.empty():
            keeping_up.get_nowait()
        hub.publish({"event": "session_saved", "n": SUBSCRIBER_BACKLOG})  # one too many
        hub.publish({"event": "session_saved", "n": SUBSCRIBER_BACKLOG + 1})
        await delivered(loop)
        got = [slow.get_nowait() for _ in range(slow.qsize())]
        assert got[0] == {"event": "session_saved", "n": 1}  # the oldest made room for the end
        assert got[-1] is StreamEnd.TOO_SLOW and len(got) == SUBSCRIBER_BACKLOG
        assert [keeping_up.get_nowait() for _ in range(2)] == [
            {"event": "session_saved", "n": SUBSCRIBER_BACKLOG},
            {"event": "session_saved", "n": SUBSCRIBER_BACKLOG + 1},
        ]
        hub.unsubscribe(keeping_up)
        hub.publish({"event": "rescan"})  # nobody left: nothing is scheduled
        await delivered(loop)
        assert slow.empty() and keeping_up.empty()

    asyncio.run(scenario())
