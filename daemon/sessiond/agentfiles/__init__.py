"""Keeping the agent's own `.workspace_index.json` and `.listing_cache.json` true.

Most users run the unmodified agent, which reads these two files before any expensive work
and never repairs them. sessiond sees every change and rewrites each file, atomically and only
when the agent would read something false, in every sessions folder it serves.

- `chrono`: times as the agent prints them (pure);
- `formats`: encoding and parsing of both files as the agent does (pure);
- `workspace_index`, `listing_cache`: what each file should say for a folder (rules);
- `files`: reading, and atomic replacement under sessiond's own temporary name;
- `writer`: the thread that coalesces changes and writes (`AgentFiles`);
- `doctor`: the checks `sessiond doctor` runs without a daemon.
"""

from sessiond.agentfiles.doctor import doctor_problems
from sessiond.agentfiles.writer import AgentFiles

__all__ = ["AgentFiles", "doctor_problems"]
