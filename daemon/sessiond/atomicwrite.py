"""The shared steps of writing a file through a temporary and a rename: write it all, fsync
it, remove the temporary if anything fails, fsync the folder. Each caller keeps its own rules
(naming, mode, whether a file may be replaced) around these steps."""

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
