"""The history sink: each session's history uploaded to S3/MinIO as the agent would (issue 3).

`SinkConfig.from_env(env, settings)` says whether the sink is on; `HistorySink` does the work.
Modules: config (settings), history (the object's bytes), ledger (what was uploaded),
schedule (when), s3 (the store), errors (what to tell the operator), uploader (the threads).
"""

from sessiond.sink.config import SinkConfig
from sessiond.sink.uploader import HistorySink

__all__ = ["HistorySink", "SinkConfig"]
