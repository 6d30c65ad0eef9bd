"""The history sink: each session's history uploaded to S3/MinIO as the agent would (issue 3).

`SinkConfig.from_env(env, settings)` says whether the sink is on; `HistorySink` does the work.
Modules: config (settings), source + history (the object's bytes), ledger (what was uploaded),
schedule (when), s3 (the store), delta (only the new bytes), verify (the check at start),
errors (what to tell the operator), faults (test-only pauses), uploader (the threads),
reports (what it tells the daemon: upload outcomes, status, a flush's answer).
"""

from sessiond.sink.config import SinkConfig
from sessiond.sink.uploader import HistorySink

__all__ = ["HistorySink", "SinkConfig"]
