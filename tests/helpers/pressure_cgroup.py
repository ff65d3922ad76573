"""Real memory pressure for tests: page-cache thrashing inside a small cgroup.

A process reads a file several times larger than the memory limit of its
cgroup, so the kernel reclaims and refaults its pages continuously: real
memory stalls, seen in the cgroup's own PSI file (cgroup v2) and in
/proc/pressure/memory.  Works with a pure cgroup v2 hierarchy and with the
hybrid layout (memory limit in v1, PSI in the unified v2 tree).

/proc/pressure/memory is the whole machine's: a test that needs it calm
(nothing but its own thrashing) and every ``ThrashingCgroup`` hold
``host_memory_pressure()``, so that test runs of several checkouts on one
machine take turns.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers.file_lock import LOCK_WAIT, LockBusy, machine_lock

CGROUP = Path("/sys/fs/cgroup")
PRESSURE_LOCK = Path("/var/tmp/mom-tests-memory-pressure.lock")


def host_memory_pressure(timeout: float = LOCK_WAIT) -> contextlib.AbstractContextManager:
    """Hold the machine-wide lock on provoking (or watching) the host's
    memory pressure; ``LockBusy`` when another test process keeps it."""
    return machine_lock(PRESSURE_LOCK, "the host's memory pressure", timeout)


class ThrashingCgroup:
    """A cgroup with a small memory limit and a thrashing process in it."""

    def __init__(self, workdir: Path, *, limit_mib: int = 16, file_mib: int = 200) -> None:
        self.name = f"mom-test-{uuid.uuid4().hex[:8]}"
        self.workdir = workdir
        self.limit = limit_mib << 20
        self.file_mib = file_mib
        self.process: subprocess.Popen | None = None
        self.dirs: list[Path] = []
        self._lock = contextlib.ExitStack()
        if (CGROUP / "cgroup.controllers").exists():      # pure cgroup v2
            self.pressure_dir = CGROUP / self.name
            self.limit_file = self.pressure_dir / "memory.max"
        else:                                              # hybrid v1 + v2
            self.pressure_dir = CGROUP / "unified" / self.name
            self.limit_file = CGROUP / "memory" / self.name / "memory.limit_in_bytes"

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why this host cannot run it, or None."""
        if os.geteuid() != 0:
            return "creating cgroups needs root"
        if (CGROUP / "cgroup.controllers").exists():
            return None if "memory" in (CGROUP / "cgroup.subtree_control").read_text() \
                else "the cgroup v2 memory controller is not enabled for children"
        if not (CGROUP / "unified" / "memory.pressure").exists():
            return "no cgroup v2 PSI files (unified hierarchy) on this host"
        if not (CGROUP / "memory" / "memory.limit_in_bytes").exists():
            return "no cgroup v1 memory controller on this host"
        return None

    @property
    def pressure_file(self) -> Path:
        return self.pressure_dir / "memory.pressure"

    def __enter__(self) -> "ThrashingCgroup":
        try:
            self._lock.enter_context(host_memory_pressure())
        except LockBusy as e:
            pytest.skip(str(e))
        try:
            self._make()
        except BaseException:
            self._lock.close()
            raise
        return self

    def _make(self) -> None:
        for directory in {self.pressure_dir, self.limit_file.parent}:
            directory.mkdir()
            self.dirs.append(directory)
        self.limit_file.write_text(str(self.limit))
        self.data = self.workdir / "thrash.bin"
        with open(self.data, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(self.file_mib):
                f.write(chunk)
            # Dirty pages cannot be dropped from the page cache: write them
            # out, or the thrasher would read them from memory, stall-free.
            f.flush()
            os.fsync(f.fileno())

    def start(self) -> None:
        """Start thrashing (until stop())."""
        procs = " ".join(str(d / "cgroup.procs") for d in self.dirs)
        # Join the cgroups first, drop the file from the page cache (pages
        # are charged to whoever reads them in), then read it round and round.
        script = (f"for f in {procs}; do echo $$ > $f; done; "
                  f"dd if={self.data} iflag=nocache count=0 status=none; "
                  f"while :; do cat {self.data} > /dev/null; done")
        self.process = subprocess.Popen(["bash", "-c", script], start_new_session=True)

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
            # The killed readers may still be leaving: a cgroup with members
            # cannot be removed (EBUSY).
            deadline = time.monotonic() + 10
            while any((d / "cgroup.procs").read_text().strip() for d in self.dirs) \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            for directory in reversed(self.dirs):
                directory.rmdir()
            self.data.unlink(missing_ok=True)
        finally:
            self._lock.close()
