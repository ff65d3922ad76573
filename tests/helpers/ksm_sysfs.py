"""The real /sys/kernel/mm/ksm for tests: every tunable saved, and restored after."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator

import pytest

REAL = Path("/sys/kernel/mm/ksm")
TUNABLES = ("run", "pages_to_scan", "sleep_millisecs", "merge_across_nodes")


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
    where this kernel has no KSM or it cannot be written)."""
    if not REAL.is_dir():
        pytest.skip(f"{REAL} is absent: this kernel has no KSM")
    if os.geteuid() != 0:
        pytest.skip("changing the real KSM settings needs root")
    saved = {n: (REAL / n).read_text().strip() for n in TUNABLES if (REAL / n).exists()}
    try:
        write_real("run", saved["run"])
    except OSError as exc:
        pytest.skip(f"{REAL} is not writable here: {exc}")
    try:
        yield saved
    finally:
        # merge_across_nodes only changes while nothing is shared: unmerge first.
        if "merge_across_nodes" in saved and \
                (REAL / "merge_across_nodes").read_text().strip() != saved["merge_across_nodes"]:
            write_real("run", "2")
            wait_unshared()
            write_real("merge_across_nodes", saved["merge_across_nodes"])
        write_real("pages_to_scan", saved["pages_to_scan"])
        write_real("sleep_millisecs", saved["sleep_millisecs"])
        write_real("run", saved["run"])
        assert {n: (REAL / n).read_text().strip() for n in saved} == saved
