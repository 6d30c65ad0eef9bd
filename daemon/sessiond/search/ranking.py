"""Ranking a `search` query against the index: the SQL, run on a reader connection inside the
caller's transaction, and the hits it gives (docs/search.md, "Answers")."""

from __future__ import annotations

import sqlite3
from typing import Any

from sessiond.search.store import SLOT_BITS, TITLE_ROLE

SNIPPET_TOKENS = 16  # the words of a hit's snippet
MAX_LIMIT = 1000  # hits on one page at most
RANK_LIMIT = 20_000
"""At most this many matching texts are ranked: those of the sessions indexed last (doc ids
grow as sessions are first indexed, oldest first, or indexed whole again). A word found in
more texts than this is too common for its bm25 to tell them apart, and ranking them all
would cost seconds; `total` still counts every match."""


# Stage one ranks without snippets: a result column is computed for every row the sort sees,
# and a snippet costs far more than bm25. Only the page's hits get one, in stage two, all in
# one query.
_RANKED = f"""
SELECT m.rowid, d.id FROM (
    SELECT texts.rowid AS rowid, bm25(texts) AS score FROM texts
    WHERE texts MATCH ? {{scope}} ORDER BY texts.rowid DESC LIMIT ?
) m JOIN docs d ON d.id = m.rowid >> {SLOT_BITS}
ORDER BY m.score, d.updated_ns DESC, m.rowid DESC
LIMIT ? OFFSET ?
"""
_SNIPPETS = f"""
SELECT texts.rowid, texts.role, snippet(texts, 0, '[', ']', '…', {SNIPPET_TOKENS}), bm25(texts)
FROM texts WHERE texts MATCH ? AND texts.rowid IN ({{rowids}})
"""
_DOCS = "SELECT id, session_id, title, directory, updated_at FROM docs WHERE id IN ({ids})"
_TOTAL = "SELECT count(*) FROM texts WHERE texts MATCH ? {scope}"
_SCOPE = f"AND texts.rowid >> {SLOT_BITS} IN (SELECT doc FROM doc_workspaces WHERE workspace = ?)"


def run_query(
    conn: sqlite3.Connection,
    match: str,
    workspace: str | None,
    limit: int,
    offset: int,
    rank_limit: int = RANK_LIMIT,
) -> tuple[list[dict[str, Any]], int]:
    """Hits of the page and the total, on a reader connection, in the caller's transaction."""
    scope, params = ("", [match]) if workspace is None else (_SCOPE, [match, workspace])
    ranked = conn.execute(
        _RANKED.format(scope=scope), [*params, rank_limit, limit, offset]
    ).fetchall()
    total = conn.execute(_TOTAL.format(scope=scope), params).fetchone()[0]
    if not ranked:
        return [], total
    # One query for every snippet: FTS5 then reads each term's doclist once, not once a hit.
    rowids = [rowid for rowid, _ in ranked]
    marks = ",".join("?" * len(rowids))
    texts = {
        row[0]: row[1:] for row in conn.execute(_SNIPPETS.format(rowids=marks), [match, *rowids])
    }
    doc_ids = sorted({doc for _, doc in ranked})
    docs = {
        row[0]: row[1:]
        for row in conn.execute(_DOCS.format(ids=",".join("?" * len(doc_ids))), doc_ids)
    }
    mask = (1 << SLOT_BITS) - 1
    hits = []
    for rowid, doc in ranked:
        if rowid not in texts or doc not in docs:  # cannot be: one snapshot for all stages
            continue
        role, snippet, bm25 = texts[rowid]
        session_id, title, directory, updated_at = docs[doc]
        slot = rowid & mask
        hits.append(
            {
                "session_id": session_id,
                "title": title,
                "directory": directory,
                "updated_at": updated_at,
                "message_index": None if slot == 0 else slot - 1,
                "role": TITLE_ROLE if slot == 0 else role,
                "snippet": snippet,
                "score": round(-bm25, 6),
            }
        )
    return hits, total
