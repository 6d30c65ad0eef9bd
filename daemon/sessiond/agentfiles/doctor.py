"""What `sessiond doctor` checks for the agent files, without a running daemon.

Whether a sessions folder is writable at all is the folder check's business
(`sessiond.doctor.check_sessions_folder`); this adds what can still stop a write there.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

from sessionctl.agent import LISTING_CACHE_NAME, WORKSPACE_INDEX_NAME


def doctor_problems(
    folders: Iterable[str], *, workspace_index: bool, listing_cache: bool
) -> list[str]:
    """A problem for each agent file, among those turned on, that sessiond could not replace:
    something other than a file (a folder, say) stands at its name."""
    wanted = ((WORKSPACE_INDEX_NAME, workspace_index), (LISTING_CACHE_NAME, listing_cache))
    names = [name for name, on in wanted if on]
    problems = []
    for folder in sorted(set(folders)):
        for name in names:
            path = os.path.join(folder, name)
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue  # absent (created when needed), or the folder check reports it
            if not stat.S_ISREG(mode) and not stat.S_ISLNK(mode):
                problems.append(f"{path} is not a file, so sessiond cannot keep it true; remove it")
    return problems
