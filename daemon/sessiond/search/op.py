"""The `search` op (docs/protocol.md): check the query, wait when asked, ask the index."""

from __future__ import annotations

import asyncio
from typing import Any

from sessionctl.protocol import DEFAULT_WAIT_TIMEOUT_S, ErrorCode, ProtocolError

from sessiond.search.query import QueryError, to_fts
from sessiond.search.service import SearchQueryRefused, SearchService, SearchUnavailable


async def search(
    service: SearchService, args: dict[str, Any], workspace: str | None
) -> dict[str, Any]:
    """`args` as the protocol checked them; `workspace` canonical, as `resume` matches it."""
    try:
        match = to_fts(args["query"])
    except QueryError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"query: {exc}") from None
    if args["sync"]:
        caught_up = await asyncio.to_thread(service.wait_caught_up, DEFAULT_WAIT_TIMEOUT_S)
        if not caught_up:
            raise ProtocolError(
                ErrorCode.TIMEOUT,
                f"the search index did not catch up within {DEFAULT_WAIT_TIMEOUT_S}s",
            )
    try:
        found = await asyncio.to_thread(
            service.search, match, workspace, args["limit"], args["offset"]
        )
    except SearchUnavailable as exc:
        raise ProtocolError(ErrorCode.UNAVAILABLE, str(exc)) from None
    except SearchQueryRefused as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"query: {exc}") from None
    return {"source": "daemon", **found}
