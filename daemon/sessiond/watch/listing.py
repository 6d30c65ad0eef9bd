"""Folder listings for a scan: the session files of a folder and one stat of each, fetched a few
folders ahead on worker threads.

A restart after a reboot waits on the disk for every inode it stats; `stat` releases the GIL,
so several threads overlap those waits while the indexer applies what is already listed. The
read-ahead is bounded, so a scan of many folders never holds all their stat results at once.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from sessionctl.agent import is_session_file_name, is_utf8_name

from sessiond.logs import log_event

WORKERS = 2
AHEAD = 2 * WORKERS  # folders listed ahead of the one being applied
Stat = os.stat_result | OSError  # a file's stat, or why it could not be taken


@dataclass(slots=True)
class Listing:
    folder: str
    stats: dict[str, Stat]  # path -> stat, for each session file in the folder


def list_folder(folder: str) -> Listing:
    try:
        names = os.listdir(folder)
    except OSError:
        names = []
    stats: dict[str, Stat] = {}
    for name in names:
        if is_session_file_name(name):
            path = os.path.join(folder, name)
            if not is_utf8_name(path):
                undecodable(path)
                continue
            try:
                stats[path] = os.stat(path)
            except OSError as exc:
                stats[path] = exc
    return Listing(folder, stats)


_logged: set[str] = set()


def undecodable(path: str) -> None:
    """Log a session file skipped for its name, once per path (at most a few thousand)."""
    if path in _logged or len(_logged) > 4096:
        return
    _logged.add(path)
    shown = path.encode("utf-8", "backslashreplace").decode("ascii", "replace")
    log_event("session_name_undecodable", logging.WARNING, path=shown)


def listings(folders: list[str]) -> Iterator[Listing]:
    """Each folder's listing, in order."""
    if len(folders) <= AHEAD:
        yield from map(list_folder, folders)
        return
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="sessiond-list") as pool:
        pending: deque[Future[Listing]] = deque()
        upcoming = iter(folders)
        for folder in upcoming:
            pending.append(pool.submit(list_folder, folder))
            if len(pending) > AHEAD:
                break
        while pending:
            yield pending.popleft().result()
            following = next(upcoming, None)
            if following is not None:
                pending.append(pool.submit(list_folder, following))
