"""The history sink: each session's history uploaded to S3/MinIO as the agent would.

`SinkConfig.from_env(env, s3)` (`config`) says whether the sink is on; `HistorySink`
(`uploader`) does the work. Modules: config (settings), source + history (the object's bytes),
ledger (what was uploaded), schedule (when), s3 (the store), delta (only the new bytes), verify
(the check at start), errors (what to tell the operator), reports (typed results and statuses),
faults (test-only pauses), uploader (the threads). Import the submodules: this package
re-exports nothing, so importing `sessiond.sink.s3` from `remote/` does not pull in the uploader
(which imports `remote/` back).
"""
