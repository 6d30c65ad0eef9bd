"""What `.workspace_index.json` should say for one sessions folder.

The agent's lookup (`scan_with_index`) takes `entries[canonical cwd]`, loads
`<this folder>/<value>.json` and accepts it only if its canonicalized `metadata.directory` is
that workspace; otherwise it scans this folder: newest mtime first (ties to the greater file
name, as sessiond orders them), the first session of the workspace wins. So the true entry for
a workspace is the file name (less `.json`) of that winner, and only workspaces with a session
in this folder can have a true entry.

Rules, for the current entries the agent (or anyone) left in the file:
- a workspace with sessions here gets its winner, whatever the file said (a dead entry, a
  session of another directory, an older session: all repaired);
- an entry for a workspace with no session here is dropped when its file is gone or is a
  session sessiond knows (then its directory is another workspace, so the fast path fails);
- it is kept when its file exists but sessiond has not indexed it: sessiond may not have read
  it yet, or cannot read it; it proves nothing wrong, and the agent checks it on use anyway.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from sessionctl.agent import canonicalize, is_session_file_name, session_id_from_file_name

from sessiond.agentfiles.formats import is_utf8, lossy
from sessiond.index.records import SessionRecord


def workspace_key(directory: str) -> str:
    """The index key for a session's directory: `canonicalize(dir).to_string_lossy()`."""
    return lossy(canonicalize(directory))


def winners(
    records: Iterable[SessionRecord], key_of: Callable[[str], str] = workspace_key
) -> dict[str, str]:
    """Workspace key → file stem of the session the agent's scan of this folder puts first."""
    best: dict[str, tuple[int, str]] = {}  # key -> (mtime_ns, file name) of the newest
    for record in records:
        if record.directory is None:
            continue
        key = key_of(record.directory)
        order = (record.version.mtime_ns, record.file_name)  # resume_key within one folder
        if key not in best or order > best[key]:
            best[key] = order
    chosen = {key: session_id_from_file_name(name) for key, (_, name) in best.items()}
    # The agent forms `<value>.json` from a UTF-8 string, so it could never open such a file.
    return {key: stem for key, stem in chosen.items() if is_utf8(stem)}


def plausible_stem(value: str) -> bool:
    """A value the fast path could resolve to a session file inside this folder."""
    return (
        bool(value)
        and "/" not in value
        and "\x00" not in value
        and is_session_file_name(f"{value}.json")
    )


def desired(
    chosen: Mapping[str, str],
    current: Mapping[str, str],
    indexed_stems: set[str],
    exists: Callable[[str], bool],
) -> dict[str, str]:
    """The entries to have: `chosen` (from `winners`), plus the current entries the rules in
    the module doc keep. `exists(stem)` says whether `<folder>/<stem>.json` exists."""
    wanted = dict(chosen)
    for key, value in current.items():
        if key in wanted or not plausible_stem(value) or value in indexed_stems:
            continue
        if exists(value):
            wanted[key] = value
    return wanted


@dataclass
class Changes:
    """How `wanted` differs from what was in the file."""

    added: int = 0  # a workspace the file did not name
    repaired: int = 0  # a workspace named with the wrong session
    dropped: int = 0  # an entry removed

    @classmethod
    def between(cls, current: Mapping[str, object], wanted: Mapping[str, object]) -> Changes:
        changes = cls()
        for key, value in wanted.items():
            if key not in current:
                changes.added += 1
            elif current[key] != value:
                changes.repaired += 1
        changes.dropped = sum(1 for key in current if key not in wanted)
        return changes


def plan(folder: str, records: list[SessionRecord], current: Mapping[str, str]) -> dict[str, str]:
    """`desired` for `folder`, with directories canonicalized now (a workspace may have been
    created or re-linked since its sessions were read) and file existence asked of the disk."""
    keys: dict[str, str] = {}

    def key_of(directory: str) -> str:
        if directory not in keys:
            keys[directory] = workspace_key(directory)
        return keys[directory]

    indexed = {session_id_from_file_name(r.file_name) for r in records}
    return desired(
        winners(records, key_of),
        current,
        indexed,
        lambda stem: os.path.exists(os.path.join(folder, f"{stem}.json")),
    )
