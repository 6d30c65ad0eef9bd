"""The search query language and its FTS5 translation (docs/search.md, "Query syntax"), and
that every translation is a valid FTS5 query on a real FTS5 table."""

from __future__ import annotations

import sqlite3

import pytest
from sessiond.search.query import MAX_QUERY_CHARS, QueryError, Term, parse_query, to_fts
from sessiond.search.store import TOKENIZER


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("migration", '"migration"'),
        ("fix  migration\tbug", '"fix" AND "migration" AND "bug"'),
        ('"database migration"', '"database migration"'),
        ("migr*", '"migr" *'),
        ('"data migr"*', '"data migr" *'),
        ("foo-bar", '"foo-bar"'),
        ("OR AND NOT NEAR", '"OR" AND "AND" AND "NOT" AND "NEAR"'),
        ("body:secret ^start", '"body:secret" AND "^start"'),
        ('a"b c"', '"a" AND "b c"'),
        ("Café ÜBER", '"Café" AND "ÜBER"'),
        ("(x)", '"(x)"'),
        ("!!! word", '"word"'),
    ],
)
def test_translation(query: str, expected: str) -> None:
    assert to_fts(query) == expected


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ('"unclosed phrase', "unbalanced quote"),
        ('one "two', "unbalanced quote"),
        ("*prefix", "'*' may only end a word"),
        ("mi*d", "'*' may only end a word"),
        ("a**", "'*' may only end a word"),
        ('"phrase"tail', "put a space after the phrase"),
        ("!!! ... ---", "no words"),
        ("***", "'*' may only end a word"),
        ('""', "no words"),
        ("   ", "no words"),
        ("a\x00b", "NUL"),
        ("x" * (MAX_QUERY_CHARS + 1), "longer than"),
        (" ".join(["w"] * 33), "more than 32"),
    ],
)
def test_bad_queries_say_what_is_wrong(query: str, says: str) -> None:
    with pytest.raises(QueryError) as caught:
        to_fts(query)
    assert says in str(caught.value)


def test_terms_keep_prefix_and_phrase() -> None:
    assert parse_query('"a b"* c* d') == [
        Term("a b", prefix=True, phrase=True),
        Term("c", prefix=True),
        Term("d"),
    ]


def test_quotes_inside_terms_are_escaped() -> None:
    assert Term('say "hi"').fts() == '"say ""hi"""'


HOSTILE = [
    "NEAR(a b, 2)",
    "a OR b",
    "NOT x",
    "-x",
    "x + y",
    "{body role}: x",
    "body: x",
    "role:user",
    "^x",
    "x:*",
    "'single'",
    "a AND",
    "(((",
    "é̃́",
    "\u200b zero width",
    "\U0001f600 emoji",
    "\ue000 private",
]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_queries_are_valid_fts5_or_refused(query: str) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute(f"CREATE VIRTUAL TABLE t USING fts5(body, role UNINDEXED, tokenize='{TOKENIZER}')")
    conn.execute("INSERT INTO t(body, role) VALUES ('x y a b body role user', 'user')")
    try:
        match = to_fts(query)
    except QueryError:
        return
    conn.execute("SELECT count(*) FROM t WHERE t MATCH ?", (match,)).fetchone()  # no error
