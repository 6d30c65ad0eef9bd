"""The agent's SQLite generation, read-only: one long-lived connection per `sessions.sqlite3`,
change following by `data_version` and `(id, revision)`, and sessions rebuilt on demand
(docs/storage.md)."""
