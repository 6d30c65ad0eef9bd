"""What `.listing_cache.json` should say for one sessions folder.

The agent's listing stats every session file, keys it by its path as `read_dir` forms it
(`<sessions dir>/<file name>`, `Path::to_str`), and reuses the cached summary when `mtime_ns`
and `size` match; otherwise it parses the file. So the true cache has, for each session file,
the entry the agent would compute for the version on disk, and nothing for a file that is gone.

Rules:
- each session sessiond has indexed gets the entry for the version it read (when the file has
  changed since, the indexer reads it again and the folder is recomputed);
- keys use the folder as the agent spells it: sessiond serves folders by their real path,
  which is the agent's spelling unless it reaches the folder through a symlinked
  `CODETETHER_DATA_DIR`; when every key the agent wrote uses one other absolute spelling of
  this same folder, that spelling is kept, or the agent would miss on every file;
- an agent-written entry for a file sessiond has not indexed (not read yet, or a file the
  agent lists but cannot load as a session) is kept while it still matches the file's
  `mtime_ns` and `size`, the agent's own test; it is dropped once the file is gone or changed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sessionctl.agent import is_session_file_name

from sessiond.agentfiles.formats import cache_entry, is_utf8, valid_cache_entry
from sessiond.index.records import SessionRecord

Stat = Callable[[str], tuple[int, int] | None]  # file path -> (mtime_ns, size)


def key_folder(folder: str, current_keys: Iterable[str]) -> str:
    """The spelling of `folder` to key entries with (see the module doc)."""
    spellings = {os.path.dirname(key) for key in current_keys}
    if len(spellings) != 1:
        return folder
    (spelling,) = spellings
    if spelling != folder and os.path.isabs(spelling) and os.path.realpath(spelling) == folder:
        return spelling
    return folder


def checked_entry(record: SessionRecord) -> dict[str, Any] | None:
    """The record's entry, or None when the agent could not have one: a path or string that
    is not UTF-8 (`Path::to_str` fails, serde_json cannot write it)."""
    entry = cache_entry(record)
    if entry is None or not is_utf8(record.file_name):
        return None
    # Unrolled (no generator): this runs for every session of a folder at each recomputation.
    title, directory = record.title, record.directory
    if not (is_utf8(record.session_id) and is_utf8(record.agent)):
        return None
    if (title is not None and not is_utf8(title)) or (
        directory is not None and not is_utf8(directory)
    ):
        return None
    return entry


def desired(
    prefix: str,
    records: Iterable[SessionRecord],
    current: Mapping[str, Any],
    stat: Stat,
    folder: str,
) -> dict[str, Any]:
    """The entries to have; `stat(path)` gives a file's (mtime_ns, size) or None if gone."""
    wanted: dict[str, Any] = {}
    names: set[str] = set()
    base = os.path.join(prefix, "") if is_utf8(prefix) else None
    for record in records:
        name = record.file_name
        names.add(name)
        if base is not None and (entry := checked_entry(record)) is not None:
            wanted[base + name] = entry
    for key, entry in current.items():
        if key in wanted:  # the usual case, checked before any path is split
            continue
        name = os.path.basename(key)
        if name in names or os.path.dirname(key) != prefix:
            continue
        if not is_session_file_name(name) or not is_utf8(key) or not valid_cache_entry(entry):
            continue
        if stat(os.path.join(folder, name)) == (entry["mtime_ns"], entry["size"]):
            wanted[key] = entry
    return wanted


def stat_file(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class Planner:
    """`desired` for one folder after another. It remembers nothing per session: a memo of
    each record's entry cost ~670 bytes a session, more than the rest of the index allows,
    and chrono's fast path for the times the agent writes makes recomputing entries cheap."""

    def __call__(
        self, folder: str, records: list[SessionRecord], current: Mapping[str, Any]
    ) -> dict[str, Any]:
        return desired(key_folder(folder, current), records, current, stat_file, folder)
