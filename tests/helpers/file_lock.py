"""Locks shared by test processes on one machine: flock() with a deadline.

Several checkouts may run their tests on one machine at once, and some
things exist once per machine (the kernel's KSM settings, its memory
pressure): ``machine_lock`` makes such test processes take turns.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
import time
from pathlib import Path
from typing import Iterator

#: How long a test waits for another test process to be done with something
#: of the machine's: the end-to-end module, the longest holder, takes about
#: three minutes on a loaded two-core machine.  Below pytest's default
#: timeout (300 s).
LOCK_WAIT = 240.0


class LockBusy(TimeoutError):
    """Another test process held a machine lock for longer than we waited."""


def flock_within(fd: int, timeout: float, what: str, interval: float = 0.1) -> None:
    """Take an exclusive flock() on ``fd``, waiting up to ``timeout`` seconds.

    TimeoutError ("``what`` held for ... s") when another process keeps it.
    Polled rather than blocking, so that the wait has a deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} held for {timeout:g} s")
        time.sleep(interval)


_depth: dict[Path, int] = {}  # how deep this process holds each lock


@contextlib.contextmanager
def machine_lock(path: Path, what: str, timeout: float = LOCK_WAIT) -> Iterator[None]:
    """Hold the machine-wide lock ``path`` on ``what`` (re-entrant within a
    process); ``LockBusy``, naming the holder, after ``timeout`` seconds."""
    if _depth.get(path):
        _depth[path] += 1
        try:
            yield
        finally:
            _depth[path] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            flock_within(fd, timeout, str(path), interval=0.2)
        except TimeoutError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            raise LockBusy(f"{what} was in use by another test process for "
                           f"{timeout:.0f} s ({holder or 'unknown'})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:300]}\n".encode(), 0)
        _depth[path] = 1
        try:
            yield
        finally:
            _depth[path] = 0
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock
