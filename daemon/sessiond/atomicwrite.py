"""Writing a file through a temporary and a rename: the shared steps (write it all, fsync it,
remove the temporary if anything fails, fsync the folder), and sessiond's own state files
built from them. Each other caller keeps its own rules (naming, mode, whether a file may be
replaced) around these steps."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to `fd` (os.write may write fewer than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_synced(fd: int, data: bytes) -> None:
    """Write `data` to `fd`, fsync it and close it (also on failure)."""
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def removed_on_failure(tmp: str) -> Iterator[None]:
    """Unlink `tmp` if the block raises, so a failed write leaves no temporary behind."""
    try:
        yield
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def fsync_folder(folder: str) -> None:
    """Make a rename inside `folder` durable."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_state_file(path: str, data: bytes) -> None:
    """Atomically replace `path` with `data` (mode 0600): a crash leaves either the old or the
    new file, never a torn one. Only for sessiond's state files (header cache, upload ledger,
    catalog) in the state folder; the agent's folders get agentfiles' own writer. Raises
    OSError on failure."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with removed_on_failure(tmp):
        write_synced(fd, data)
        os.replace(tmp, path)
    fsync_folder(folder)
