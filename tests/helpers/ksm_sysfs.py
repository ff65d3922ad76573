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
import time
from pathlib import Path
from typing import Iterator

import pytest

from momservice.collectors.ksm import DEFAULT_KSM_DIR, KSM_TUNABLES
from tests.helpers.file_lock import LOCK_WAIT, LockBusy, machine_lock

REAL = DEFAULT_KSM_DIR
TUNABLES = KSM_TUNABLES
LOCK = Path("/var/tmp/mom-tests-ksm.lock")

#: Raised by exclusive_real_ksm when another test process keeps it too long.
KsmBusy = LockBusy


def exclusive_real_ksm(timeout: float = LOCK_WAIT) -> contextlib.AbstractContextManager:
    """Hold the machine-wide lock on the real KSM (re-entrant in this process)."""
    return machine_lock(LOCK, "the real KSM", timeout)


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
