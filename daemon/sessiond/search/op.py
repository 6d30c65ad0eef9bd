"""The `search` op (docs/protocol.md): check the query, wait when asked, ask the index."""

from __future__ import annotations

import asyncio
from typing import Any

from sessionctl.protocol import DEFAULT_WAIT_TIMEOUT_S, ErrorCode, ProtocolError, Search

from sessiond.search.query import QueryError, to_fts
from sessiond.search.service import SearchQueryRefused, SearchService, SearchUnavailable


async def search(service: SearchService, request: Search, workspace: str | None) -> dict[str, Any]:
    """`request` as the protocol checked it; `workspace` canonical, as `resume` matches it."""
    try:
        match = to_fts(request.query)
    except QueryError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"query: {exc}") from None
    if request.sync:
        caught_up = await asyncio.to_thread(service.wait_caught_up, DEFAULT_WAIT_TIMEOUT_S)
        if not caught_up:
            raise ProtocolError(
                ErrorCode.TIMEOUT,
                f"the search index did not catch up within {DEFAULT_WAIT_TIMEOUT_S}s",
            )
    try:
        found = await asyncio.to_thread(
            service.search, match, workspace, request.limit, request.offset
        )
    except SearchUnavailable as exc:
        raise ProtocolError(ErrorCode.UNAVAILABLE, str(exc)) from None
    except SearchQueryRefused as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"query: {exc}") from None
    return {"source": "daemon", **found}
