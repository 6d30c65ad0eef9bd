"""Giving freed memory back to the system (glibc only; elsewhere these do nothing).

The daemon's big transient buffers (a session file read whole, the header cache written out)
are freed at once, but glibc keeps the heap they grew and, after the first large free, raises
its mmap threshold so later large buffers land in the heap too. A fixed threshold keeps them in
their own mappings, returned on free; a trim after a burst returns the free heap pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # mallopt parameter, from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own default, kept fixed


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except (OSError, TypeError):
        return None
    # Only glibc has both (musl, macOS): elsewhere there is nothing to tune.
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def fix_mmap_threshold() -> None:
    if _LIBC is not None:
        _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def trim() -> None:
    """Return free heap pages to the system (after a burst of work has freed its garbage)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
