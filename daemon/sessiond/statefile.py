"""Writing sessiond's own state files (header cache, upload ledger) so a crash leaves either
the old or the new file, never a torn one: a private temp file, fsync, rename, fsync the
folder. Only in the state folder; the agent's folders get agentfiles' own writer."""

from __future__ import annotations

import os

from sessiond.atomicwrite import fsync_folder, removed_on_failure, write_synced


def write_state_file(path: str, data: bytes) -> None:
    """Atomically replace `path` with `data` (mode 0600). Raises OSError on failure."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with removed_on_failure(tmp):
        write_synced(fd, data)
        os.replace(tmp, path)
    fsync_folder(folder)
