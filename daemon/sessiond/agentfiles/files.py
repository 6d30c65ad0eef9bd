"""Reading the agent's sidecar files and replacing them atomically under sessiond's own name.

The agent writes `.workspace_index.json` through the fixed name `.workspace_index.json.tmp`;
using that name too would let two writers interleave in one temporary file. sessiond's
temporary is `.sessiond-tmp-<name>-<pid>`: no `.json` extension, so neither the agent's scans
nor sessiond's indexer take it for a session.
"""

from __future__ import annotations

import hashlib
import os
import stat

from sessionctl.regular import FileTooLarge, NotRegularFile, read_regular

from sessiond.atomicwrite import removed_on_failure, write_all
from sessiond.index.records import FileVersion

TMP_PREFIX = ".sessiond-tmp-"
MAX_READ_BYTES = 256 << 20  # a bigger sidecar is nothing the agent wrote: replace it unread


def tmp_path(folder: str, name: str) -> str:
    return os.path.join(folder, f"{TMP_PREFIX}{name.lstrip('.')}-{os.getpid()}")


def file_version(path: str) -> FileVersion | None:
    try:
        return FileVersion.of(os.stat(path))
    except OSError:
        return None


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def is_unchanged(path: str, written: FileVersion, written_digest: bytes) -> bool:
    """Whether `path` still holds what sessiond wrote. The file version alone could be fooled: the
    agent rewrites the listing cache in place (same inode), and within one timestamp tick a
    rewrite of the same size keeps the mtime, so the bytes are compared too."""
    try:
        st, data = read_regular(path, written.size)
    except OSError:  # gone, replaced by something larger, or no regular file
        return False
    return FileVersion.of(st) == written and digest(data) == written_digest


def read(path: str) -> bytes | None:
    """The file's bytes; None when there is no file. Other errors propagate."""
    try:
        return read_regular(path, MAX_READ_BYTES)[1]
    except FileNotFoundError:
        return None
    except NotRegularFile:  # a folder, a FIFO, a device: the agent reads an empty index
        return b""
    except FileTooLarge:
        return b""


def replace(folder: str, name: str, data: bytes) -> FileVersion:
    """Write `data` to a temporary of our own and rename it onto `folder/name`; the version of
    the new file. Nothing is left behind on failure."""
    tmp = tmp_path(folder, name)
    target = os.path.join(folder, name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    with removed_on_failure(tmp):
        fd = os.open(tmp, flags, 0o666)  # a new file gets the default mode, as the agent's do
        try:
            try:
                os.fchmod(fd, stat.S_IMODE(os.stat(target).st_mode))  # a file keeps its mode
            except FileNotFoundError:
                pass
            write_all(fd, data)
            written = FileVersion.of(os.fstat(fd))
        finally:
            os.close(fd)
        os.replace(tmp, target)
    return written
