"""Full-text search over every served session (docs/search.md): an SQLite FTS5 index in the
state folder, kept by a worker process fed from the indexer's changes, and queried by the
`search` op."""
