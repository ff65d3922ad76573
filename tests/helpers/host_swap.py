"""Host swap for a test that squeezes a process's memory: the host's own, or a
swap file of the test's for as long as it runs.

A cgroup hard limit below what a process holds makes the kernel reclaim
it; anonymous memory (a QEMU guest's RAM) can only go to swap, and without
swap the limit is refused (cgroup v1: EBUSY) or the process OOM-killed.
A host with no swap gets a swap file under /var/tmp (not /tmp, which may be
a tmpfs, where swap files do not work), removed again afterwards.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

SWAP_DIR = Path("/var/tmp")


class SwapUnavailable(RuntimeError):
    """No swap can be had here (the message says why)."""


def free_swap_kib() -> int:
    """Swap free on the host, KiB (/proc/meminfo)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("SwapFree:"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def host_swap(mib: int) -> Iterator[str]:
    """At least ``mib`` MiB of swap free while inside; yields where it is
    ("the host's" or the swap file).  SwapUnavailable when none can be made."""
    if free_swap_kib() >= mib * 1024:
        yield "the host's own swap"
        return
    if os.geteuid() != 0:
        raise SwapUnavailable("the host has no swap, and making a swap file needs root")
    path = SWAP_DIR / f"mom-tests-swap-{os.getpid()}"
    try:
        with open(path, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            # Written out, not sparse: swapon refuses files with holes.
            chunk = b"\0" * (1 << 20)
            for _ in range(mib):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        for argv in (["mkswap", str(path)], ["swapon", str(path)]):
            result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            if result.returncode != 0:
                raise SwapUnavailable(f"the host has no swap and {' '.join(argv)} failed: "
                                      f"{(result.stderr or result.stdout).strip()}")
    except OSError as e:
        path.unlink(missing_ok=True)
        raise SwapUnavailable(f"the host has no swap and {path} cannot be made: {e}") from e
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    try:
        yield f"a swap file of {mib} MiB ({path})"
    finally:
        # swapoff reads back whatever is still out there: it may take a moment.
        subprocess.run(["swapoff", str(path)], capture_output=True, timeout=300)
        path.unlink(missing_ok=True)
