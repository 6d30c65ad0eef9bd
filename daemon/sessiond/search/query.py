"""The `search` query language (docs/search.md) and its translation to an FTS5 MATCH string.

Users type words, "quoted phrases" and prefix* words; every term must match. Nothing a user
types reaches FTS5 as syntax: each term becomes a quoted FTS5 string, so its operators (AND, OR,
NOT, NEAR, column filters, `^`, parentheses) are plain words here. A query that cannot be
read raises QueryError saying what is wrong, which the op answers as `bad_request`.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_QUERY_CHARS = 1000
MAX_TERMS = 32


class QueryError(ValueError):
    """The query cannot be read; the message says why, for the user."""


@dataclass(frozen=True, slots=True)
class Term:
    text: str  # the words as typed (a phrase may hold several)
    prefix: bool = False  # the last word is a prefix
    phrase: bool = False  # typed between double quotes

    def fts(self) -> str:
        quoted = '"' + self.text.replace('"', '""') + '"'
        return quoted + " *" if self.prefix else quoted


def has_word(text: str) -> bool:
    """Whether the tokenizer (unicode61: letters, digits and private-use characters are word
    characters, all else separates) finds a word in `text`."""
    return any(ch.isalnum() or 0xE000 <= ord(ch) <= 0xF8FF for ch in text)


def parse_query(query: str) -> list[Term]:
    """The terms of a query, in order; raises QueryError."""
    if "\x00" in query:
        raise QueryError("the query must not contain NUL characters")
    if len(query) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is longer than {MAX_QUERY_CHARS} characters")
    terms: list[Term] = []
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch.isspace():
            i += 1
        elif ch == '"':
            end = query.find('"', i + 1)
            if end < 0:
                raise QueryError(
                    f"unbalanced quote: the phrase opened at character {i + 1} is not closed"
                )
            text = query[i + 1 : end]
            i = end + 1
            prefix = i < n and query[i] == "*"
            if prefix:
                i += 1
            if i < n and not query[i].isspace() and query[i] != '"':
                raise QueryError(f"put a space after the phrase that ends at character {end + 1}")
            terms.append(Term(text, prefix=prefix, phrase=True))
        else:
            start = i
            while i < n and not query[i].isspace() and query[i] != '"':
                i += 1
            word = query[start:i]
            prefix = word.endswith("*")
            core = word.rstrip("*") if prefix else word
            if "*" in core or word.count("*") > 1:
                raise QueryError(f"'*' may only end a word (a prefix search): {word[:40]!r}")
            terms.append(Term(core, prefix=prefix))
    terms = [t for t in terms if has_word(t.text)]
    if not terms:
        raise QueryError("the query has no words to search for (letters or digits)")
    if len(terms) > MAX_TERMS:
        raise QueryError(f"the query has more than {MAX_TERMS} words and phrases")
    return terms


def to_fts(query: str) -> str:
    """The FTS5 MATCH expression for a user's query: every term, all required."""
    return " AND ".join(term.fts() for term in parse_query(query))
