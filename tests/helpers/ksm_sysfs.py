"""The real /sys/kernel/mm/ksm for tests: every tunable saved, and restored after.

There is one KSM per kernel, and test runs of several checkouts may share a
machine: whoever saves and changes the real settings first holds a
machine-wide lock (``exclusive_real_ksm``), so that two runs never change
them under each other (nor restore what the other one set).  The others
wait for it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers.file_lock import flock_within

REAL = Path("/sys/kernel/mm/ksm")
TUNABLES = ("run", "pages_to_scan", "sleep_millisecs", "merge_across_nodes")
LOCK = Path("/var/tmp/mom-tests-ksm.lock")
#: How long a test waits for another run to be done with the real KSM: the
#: end-to-end module, the longest holder, takes about two minutes on a
#: loaded two-core machine.  Below pytest's default timeout (300 s).
LOCK_WAIT = 240.0


class KsmBusy(TimeoutError):
    """Another test process held the real KSM for longer than we waited."""


_held = 0  # how deep this process holds the lock


@contextlib.contextmanager
def exclusive_real_ksm(timeout: float = LOCK_WAIT) -> Iterator[None]:
    """Hold the machine-wide lock on the real KSM (re-entrant in this process)."""
    global _held
    if _held:
        _held += 1
        try:
            yield
        finally:
            _held -= 1
        return
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            flock_within(fd, timeout, str(LOCK), interval=0.2)
        except TimeoutError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            raise KsmBusy(f"the real KSM was in use by another test process for "
                          f"{timeout:.0f} s ({holder or 'unknown'})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:300]}\n".encode(), 0)
        _held = 1
        try:
            yield
        finally:
            _held = 0
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def write_real(name: str, value: str) -> None:
    with open(REAL / name, "w") as f:
        f.write(f"{value}\n")


def real_value(name: str) -> int:
    return int((REAL / name).read_text())


def wait_unshared(timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while real_value("pages_shared") and time.monotonic() < deadline:
        time.sleep(0.05)


@contextlib.contextmanager
def saved_real_ksm() -> Iterator[dict[str, str]]:
    """Yield the saved tunables; put them all back afterwards (skips the test
    where this kernel has no KSM or it cannot be written, or when another
    test process keeps the real KSM for longer than ``LOCK_WAIT``)."""
    if not REAL.is_dir():
        pytest.skip(f"{REAL} is absent: this kernel has no KSM")
    if os.geteuid() != 0:
        pytest.skip("changing the real KSM settings needs root")
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive_real_ksm())
        except KsmBusy as e:
            pytest.skip(str(e))
        saved = {n: (REAL / n).read_text().strip() for n in TUNABLES if (REAL / n).exists()}
        try:
            write_real("run", saved["run"])
        except OSError as exc:
            pytest.skip(f"{REAL} is not writable here: {exc}")
        try:
            yield saved
        finally:
            # merge_across_nodes only changes while nothing is shared: unmerge first.
            if "merge_across_nodes" in saved and (REAL / "merge_across_nodes").read_text() \
                    .strip() != saved["merge_across_nodes"]:
                write_real("run", "2")
                wait_unshared()
                write_real("merge_across_nodes", saved["merge_across_nodes"])
            write_real("pages_to_scan", saved["pages_to_scan"])
            write_real("sleep_millisecs", saved["sleep_millisecs"])
            write_real("run", saved["run"])
            assert {n: (REAL / n).read_text().strip() for n in saved} == saved
