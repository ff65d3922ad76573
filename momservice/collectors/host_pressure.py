"""``HostPressure``: the kernel's memory pressure alone (PSI averages).

HostMemory includes these fields; this collector is for a configuration
that wants the pressure without the rest of HostMemory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .base import HostStatistics, Sample
from .pressure import memory_pressure_fields

PRESSURE_FIELDS: frozenset[str] = frozenset({"mem_pressure_some", "mem_pressure_full"})


def read_memory_pressure(proc_root: Path) -> dict[str, float]:
    """The PSI memory averages of ``proc_root/pressure/memory`` (OSError if absent)."""
    return memory_pressure_fields((proc_root / "pressure/memory").read_text())


class HostPressure(HostStatistics):
    """avg10 of the ``some`` and ``full`` lines, in percent."""

    name = "HostPressure"
    fields = PRESSURE_FIELDS

    def collect(self, qemu_pids: Iterable[int] | None) -> Sample:
        return self.optional("/proc/pressure/memory",
                             lambda: read_memory_pressure(self.roots.proc_root))
