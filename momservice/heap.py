"""Giving freed memory back to the system after a burst of allocations."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_libc: ctypes.CDLL | None = None
_looked = False


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc's malloc_trim).

    Compiling a policy set has Python build the syntax tree of the
    generated source, some 10 MB for the shipped set, and free it at once;
    glibc keeps the freed pages, so momd's resident size stayed that much
    higher for good.  A no-op where the C library has no malloc_trim.
    """
    global _libc, _looked
    if not _looked:
        _looked = True
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            _libc = libc if libc is not None and hasattr(libc, "malloc_trim") else None
        except OSError:
            _libc = None
        if _libc is None:
            log.debug("no malloc_trim in the C library: freed memory stays with momd")
    if _libc is not None:
        _libc.malloc_trim(0)
