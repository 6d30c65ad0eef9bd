"""Runs the agent-files writer on a real index fed by a real indexer, and says what the agent
would find: the oracles of the agent-files tests and figures.

The writer needs two calls from the indexer besides its change listener:
`agent_file_changed(path)` for each event on `.workspace_index.json` or `.listing_cache.json`,
and `notify(folder)` whenever a folder is (re)scanned. The indexer's public hooks
(`add_agent_file_hook`, `add_folder_hook`) are used when it has them; until then
`HookedIndexer` makes the same calls by overriding.

The oracles restate the agent's rules independently of sessiond.agentfiles, from the client's
cold scan helpers (sessionctl.scan) and Python's own time parsing:
- `cold_scan(folder, ws)`: `scan_sync` over one sessions folder (byte prefilter included);
- `fast_path(folder, ws)`: `scan_with_index`'s index branch;
- `expected_index(folder)`, `expected_cache(folder)`: what each file must then hold.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sessionctl import agent
from sessionctl.scan import directory_matches, file_contains, list_candidates, load_session
from sessiond.agentfiles import AgentFiles
from sessiond.index.store import SessionIndex
from sessiond.watch.fs_event import FsEvent
from sessiond.watch.indexer import Indexer
from sessiond.watch.scan_report import Counts
from sessiond.watch.served import Discovery

from tests.support.agent_sim import chrono_time

INDEX = agent.WORKSPACE_INDEX_NAME
CACHE = agent.LISTING_CACHE_NAME
SETTLE_TIMEOUT_S = 20.0


class HookedIndexer(Indexer):
    def __init__(self, index: SessionIndex, discovery: Discovery, files: AgentFiles) -> None:
        super().__init__(index, discovery)
        self.files = files

    def _process(self, batch: list[Any]) -> None:
        # Before the batch: a barrier released by a cookie in this batch must find the
        # folder already pending.
        for item in batch:
            if isinstance(item, FsEvent) and os.path.basename(item.path) in (INDEX, CACHE):
                self.files.agent_file_changed(item.path)
        super()._process(batch)

    def _scan_folder(self, folder: str, counts: Counts) -> Counts:
        result = super()._scan_folder(folder, counts)
        self.files.notify(folder)
        return result


@dataclass
class Harness:
    index: SessionIndex
    indexer: Indexer
    files: AgentFiles

    def settle(self, timeout: float = SETTLE_TIMEOUT_S) -> None:
        """Return once every change made so far is indexed and written where due."""
        done, abandon = self.indexer.barrier()
        try:
            done.result(timeout)
        except TimeoutError:
            abandon()
            raise
        assert self.files.wait_idle(timeout), "the writer did not finish in time"


@contextmanager
def running(
    folders: list[str],
    env: Mapping[str, str],
    *,
    workspace_index: bool = True,
    listing_cache: bool = True,
    **timing: float,
) -> Iterator[Harness]:
    index = SessionIndex()
    holder: list[Indexer] = []
    files = AgentFiles(
        index,
        workspace_index=workspace_index,
        listing_cache=listing_cache,
        serves=lambda folder: holder[0].is_served(folder),
        **timing,  # type: ignore[arg-type]
    )
    discovery = Discovery(tuple(folders), False, env)
    indexer: Indexer
    if hasattr(Indexer, "add_agent_file_hook"):
        indexer = Indexer(index, discovery)
        indexer.add_agent_file_hook(files.agent_file_changed)  # type: ignore[attr-defined]
        indexer.add_folder_hook(files.notify)  # type: ignore[attr-defined]
    else:
        indexer = HookedIndexer(index, discovery, files)
    holder.append(indexer)
    indexer.add_listener(files.on_index_change)
    files.start()
    indexer.start()
    try:
        assert indexer.ready.wait(SETTLE_TIMEOUT_S), "the initial index was not built"
        yield Harness(index, indexer, files)
    finally:
        indexer.stop()
        files.stop()


# --- oracles ---------------------------------------------------------------------------------


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def sessions_in(folder: str) -> dict[str, dict[str, Any]]:
    """File name → document of every loadable session in `folder`."""
    found = {}
    for name in os.listdir(folder):
        if agent.is_session_file_name(name):
            loaded = load_session(os.path.join(folder, name))
            if loaded is not None:
                found[name] = loaded.doc
    return found


def workspaces_in(folder: str) -> set[str]:
    return {
        agent.canonicalize(doc["metadata"]["directory"])
        for doc in sessions_in(folder).values()
        if doc["metadata"].get("directory") is not None
    }


def cold_scan(folder: str, workspace: str) -> str | None:
    """The path `scan_sync` returns for `workspace` when `folder` is its sessions folder."""
    candidates = list_candidates([folder])
    needle = agent.json_escaped(workspace).encode("utf-8")
    for candidate in candidates:
        if len(candidates) >= 2 and not file_contains(candidate.path, needle):
            continue
        loaded = load_session(candidate.path)
        if loaded is not None and directory_matches(
            loaded.doc["metadata"].get("directory"), workspace
        ):
            return candidate.path
    return None


def fast_path(folder: str, workspace: str) -> str | None:
    """The path the index branch of `scan_with_index` returns, or None when it falls back."""
    doc = read_json(os.path.join(folder, INDEX))
    entries = doc.get("entries") if isinstance(doc, dict) else None
    if not isinstance(entries, dict) or not isinstance(entries.get(workspace), str):
        return None
    path = os.path.join(folder, f"{entries[workspace]}.json")
    loaded = load_session(path) if os.path.exists(path) else None
    if loaded is None:
        return None
    directory = loaded.doc["metadata"].get("directory")
    return path if directory is not None and agent.canonicalize(directory) == workspace else None


def expected_index(folder: str) -> dict[str, str]:
    chosen = {}
    for workspace in workspaces_in(folder):
        winner = cold_scan(folder, workspace)
        assert winner is not None
        chosen[workspace] = os.path.basename(winner).removesuffix(".json")
    return chosen


def agent_time(text: str) -> str:
    """chrono's re-print of a time, via Python's parser (up to 6 fraction digits)."""
    return chrono_time(dt.datetime.fromisoformat(text))


def expected_cache(folder: str) -> dict[str, Any]:
    """What the agent's listing computes for every session file in `folder`."""
    entries = {}
    for name, doc in sessions_in(folder).items():
        path = os.path.join(folder, name)
        st = os.stat(path)
        entries[path] = {
            "mtime_ns": st.st_mtime_ns,
            "size": st.st_size,
            "summary": {
                "id": doc["id"],
                "title": doc["title"],
                "created_at": agent_time(doc["created_at"]),
                "updated_at": agent_time(doc["updated_at"]),
                "message_count": len(doc["messages"]),
                "agent": doc["agent"],
                "directory": doc["metadata"]["directory"],
            },
        }
    return entries


def index_entries(folder: str) -> Any:
    doc = read_json(os.path.join(folder, INDEX))
    return doc.get("entries") if isinstance(doc, dict) else doc


def cache_entries(folder: str) -> Any:
    doc = read_json(os.path.join(folder, CACHE))
    return doc.get("entries") if isinstance(doc, dict) else doc


def files_true(folder: str) -> bool:
    return index_entries(folder) == expected_index(folder) and cache_entries(
        folder
    ) == expected_cache(folder)


def temp_litter(folder: str) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(".sessiond-tmp-")]
