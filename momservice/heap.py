"""Giving freed memory back to the system after a burst of allocations."""

from __future__ import annotations

import ctypes
import logging

from .engine.core import EngineObserver, Evaluation

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
        # The process's own symbols, libc's among them: ctypes.util's
        # find_library would run ldconfig (and load tempfile) to find it.
        libc = ctypes.CDLL(None)
        _libc = libc if hasattr(libc, "malloc_trim") else None
        if _libc is None:
            log.debug("no malloc_trim in the C library: freed memory stays with momd")
    if _libc is not None:
        _libc.malloc_trim(0)


class ReleaseAfterEvaluations(EngineObserver):
    """Calls :func:`release_free_memory` after the 1st, 2nd, 4th, 8th, ...
    evaluation, then after every ``every``-th.

    Start-up's garbage (the first samples of every guest, its first
    publication on the bus, the first replies) is freed over the first
    cycles, in the middle of the heap, where glibc keeps it: 1.6 MB at a
    thousand guests, given back by the trims of the first minute.  A trim
    costs about half a millisecond there, so the rare later ones (guests
    come and go) cost nothing per cycle.
    """

    def __init__(self, every: int = 1024) -> None:
        self.every = every
        self.evaluations = 0

    def evaluated(self, evaluation: Evaluation) -> None:
        self.evaluations += 1
        n = self.evaluations
        if (n < self.every and n & (n - 1) == 0) or n % self.every == 0:
            release_free_memory()
