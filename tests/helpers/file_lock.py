"""Locks shared by test processes on one machine: flock() with a deadline."""

from __future__ import annotations

import errno
import fcntl
import time


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
