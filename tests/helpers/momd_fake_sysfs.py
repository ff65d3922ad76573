"""momd whose /sys is a test's tree, so KSM is tuned there and never in the kernel.

    python -m tests.helpers.momd_fake_sysfs SYS_ROOT [momd arguments...]

runs momd as ``python -m momservice.momd`` would, except that the host
collector reads ``SYS_ROOT`` instead of /sys (a tree such as
``FakeHost(...).sys``), so the KSM controller writes
``SYS_ROOT/kernel/mm/ksm``: momd's service derives its KSM directory from
the collector's.  /proc is the real one.  There is no memory-pressure
trigger either: the host's real pressure would start evaluations that a
test did not ask for.

This is a fake only where the real thing must not be touched: a test that
calls SetKsm thousands of times has no business retuning the shared
kernel's ksmd.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

from momservice import momd, service
from momservice.collectors import HostCollector


def main(argv: Sequence[str]) -> int:
    sys_root = Path(argv[0])
    real_service = service.Service

    class FakeSysfsService(real_service):  # type: ignore[misc, valid-type]
        """momd's service over the test's /sys tree, without a pressure trigger."""

        def __init__(self, config: Any, **kwargs: Any) -> None:
            kwargs.setdefault("host_collector", HostCollector(Path("/proc"), sys_root))
            kwargs.setdefault("pressure_path", None)
            super().__init__(config, **kwargs)

    # momd.main imports the class from the module when it runs.
    service.Service = FakeSysfsService
    return momd.main(list(argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
