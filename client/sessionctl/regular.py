"""Reading the agent's files safely: only regular files, and only up to a size, judged on the
open descriptor.

Every reader of a file the agent (or anyone sharing its folders) can create goes through
`read_regular`: session files, the sidecar indexes, registry pointers. A FIFO named `x.json`
would block a plain `open()` forever, and a symlink to a character device or a sparse file
larger than memory would be read whole. So the file is opened with `O_NONBLOCK` (a FIFO then
opens at once), and its type and size are taken with `fstat` on that descriptor, not with a
`stat` before the open, which the file could be swapped after. Standard library only: the
client's fallback scan uses it too.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

TRANSIENT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.EINTR})
"""Errors that say nothing about the file: the process ran out of descriptors or memory.
A read that fails with one of them is retried later; the file is not gone."""


class Refused(OSError):
    """A file that is not read at all; `st` is the `fstat` of what was opened."""

    def __init__(self, st: os.stat_result, reason: str, path: str) -> None:
        super().__init__(errno.EINVAL, reason, path)
        self.st = st


class NotRegularFile(Refused):
    """The path names a FIFO, a device, a socket or a folder: nothing the agent wrote."""


class FileTooLarge(Refused):
    """The file is larger than the reader's limit (checked before anything is read)."""


def is_transient(exc: OSError) -> bool:
    return exc.errno in TRANSIENT_ERRNOS


@contextmanager
def open_regular(path: str) -> Iterator[tuple[int, os.stat_result]]:
    """The descriptor and `fstat` of `path` opened for reading without blocking, when it is a
    regular file (else NotRegularFile); closed on leaving. For readers of part of a file."""
    fd = os.open(path, _FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(st, "not a regular file", path)
        yield fd, st
    finally:
        os.close(fd)


def read_prefix(path: str, size: int) -> bytes:
    """The first `size` bytes (or fewer) of the regular file at `path`."""
    with open_regular(path) as (fd, _):
        return os.read(fd, size)


def read_regular(path: str, limit: int) -> tuple[os.stat_result, bytes]:
    """The `fstat` of the open file and its bytes, when `path` is a regular file of at most
    `limit` bytes. Raises FileNotFoundError, NotRegularFile, FileTooLarge, or the OSError of
    the open or read. A file that grows while it is read is cut at `limit + 1` bytes and
    refused, so no more than that is ever held."""
    fd = os.open(path, _FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(st, "not a regular file", path)
        if st.st_size > limit:
            raise FileTooLarge(st, f"larger than {limit} bytes", path)
        data = _read_at_most(fd, st.st_size, limit)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileTooLarge(st, f"larger than {limit} bytes", path)
    return st, data


def _read_at_most(fd: int, expected: int, limit: int) -> bytes:
    # One read of the size fstat gave (one allocation, no copy), then more only if the file
    # grew meanwhile: never more than `limit + 1` bytes in all.
    parts = [os.read(fd, min(expected, limit) + 1)]
    got = len(parts[0])
    while got <= limit:  # until end of file (a read of nothing), or past the limit
        chunk = os.read(fd, min(1 << 20, limit + 1 - got))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)
