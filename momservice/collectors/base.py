"""What a collector is: a named group of statistics, under MoM's collector names.

Host collectors (``HostMemory``, ``HostKSM``, ...) read the host
themselves; guest collectors (``GuestMemory``, ``GuestBalloon``, ...) name
which fields of the hypervisor's one sample per guest are kept, since the
hypervisor interface gathers a guest's statistics in one call.  Both are
registered in :mod:`momservice.collectors.registry`, the only list of them;
the ``[host] collectors`` and ``[guest] collectors`` configuration keys
choose among them.
"""

from __future__ import annotations

import abc
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

log = logging.getLogger(__name__)

Sample = dict[str, int | float]

#: What a missing, unreadable or garbled optional source raises.
SOURCE_ERRORS = (OSError, ValueError, KeyError)


@dataclass
class HostRoots:
    """Where a host collector reads (a test's tree instead of /proc and /sys),
    the clock its rates are measured with and the wall clock (local time)."""

    proc_root: Path = Path("/proc")
    sys_root: Path = Path("/sys")
    clock: Callable[[], float] = time.monotonic
    clock_ticks: int = 100   # the kernel's USER_HZ (os.sysconf("SC_CLK_TCK"))
    wall_clock: Callable[[], datetime] = datetime.now


class HostStatistics(abc.ABC):
    """A host collector: one group of host fields, read from /proc and /sys only.

    A source that is missing or unreadable is left out of the sample
    (through :meth:`optional`, warned about once until it comes back).
    """

    name: ClassVar[str]
    fields: ClassVar[frozenset[str]]

    def __init__(self, roots: HostRoots) -> None:
        self.roots = roots
        self._failing: set[str] = set()

    @abc.abstractmethod
    def collect(self, qemu_pids: Iterable[int] | None) -> Sample:
        """This group's fields of one host sample; ``qemu_pids`` as HostCollector's."""

    def optional(self, source: str, read: Callable[[], dict]) -> dict:
        """Run ``read``; on failure log once per outage and return {}."""
        try:
            fields = read()
        except SOURCE_ERRORS as err:
            if source not in self._failing:
                self._failing.add(source)
                log.warning("host statistics from %s unavailable, "
                            "leaving them out: %s", source, err)
            return {}
        if source in self._failing:
            self._failing.discard(source)
            log.info("host statistics from %s available again", source)
        return fields


@dataclass(frozen=True)
class GuestStatistics:
    """A guest collector: the fields of the hypervisor's guest samples it keeps."""

    name: str
    fields: frozenset[str] = field(default_factory=frozenset)

    def select(self, sample: dict[str, Any]) -> dict[str, Any]:
        """The fields of ``sample`` this collector provides."""
        return {k: v for k, v in sample.items() if k in self.fields}
