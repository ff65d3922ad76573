"""momd whose /sys is a test's tree, so KSM is tuned there and never in the kernel.

    python -m tests.helpers.momd_fake_sysfs SYS_ROOT [momd arguments...]

runs momd as ``python -m momservice.momd`` would, except that the host
collector reads ``SYS_ROOT`` instead of /sys (a tree such as
``FakeHost(...).sys``), so the KSM controller writes
``SYS_ROOT/kernel/mm/ksm``: the composition root derives the KSM directory
from the collector's.  /proc is the real one.  There is no memory-pressure
trigger either: the host's real pressure would start evaluations that a
test did not ask for.

This is a fake only where the real thing must not be touched: a test that
calls SetKsm thousands of times has no business retuning the shared
kernel's ksmd.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from momservice import momd


def main(argv: Sequence[str]) -> int:
    # The composition root's own parameters: the test's /sys, no PSI trigger.
    return momd.main(list(argv[1:]), sys_root=Path(argv[0]), pressure_path=None)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
