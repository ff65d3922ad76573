"""``HostMemory``: memory and swap from /proc/meminfo and /proc/vmstat, and the
kernel's memory pressure (PSI averages), which mom counts as memory statistics:
configurations written for MoM name HostMemory, and the shipped policies read
the pressure."""

from __future__ import annotations

from typing import Iterable

from .base import SOURCE_ERRORS, HostRoots, HostStatistics, Sample
from .errors import CollectionError
from .host_pressure import PRESSURE_FIELDS, read_memory_pressure
from .meminfo import meminfo_fields, parse_meminfo, parse_vmstat


class HostMemory(HostStatistics):
    """Memory in KiB, swap activity in pages since the previous sample, PSI in percent.

    Only an unusable /proc/meminfo raises :class:`CollectionError`: without
    it there is no meaningful host sample.
    """

    name = "HostMemory"
    fields = frozenset({"mem_available", "mem_free", "mem_unused", "anon_pages",
                        "swap_total", "swap_usage", "swap_in", "swap_out"}) | PRESSURE_FIELDS

    def __init__(self, roots: HostRoots) -> None:
        super().__init__(roots)
        self._prev_swap: tuple[int, int] | None = None

    def collect(self, qemu_pids: Iterable[int] | None) -> Sample:
        sample: Sample = dict(self._meminfo())
        sample.update(self.optional("/proc/vmstat", self._swap_activity))
        sample.update(self.optional("/proc/pressure/memory",
                                    lambda: read_memory_pressure(self.roots.proc_root)))
        return sample

    def _meminfo(self) -> dict[str, int]:
        path = self.roots.proc_root / "meminfo"
        try:
            text = path.read_text()
        except OSError as err:
            raise CollectionError(f"cannot read {path}: {err}") from err
        return meminfo_fields(parse_meminfo(text))

    def _swap_activity(self) -> dict[str, int]:
        try:
            vmstat = parse_vmstat((self.roots.proc_root / "vmstat").read_text())
            counters = (vmstat["pswpin"], vmstat["pswpout"])
        except SOURCE_ERRORS:
            # A delta across a gap would not be "since the previous sample".
            self._prev_swap = None
            raise
        previous, self._prev_swap = self._prev_swap, counters
        if previous is None:
            return {"swap_in": 0, "swap_out": 0}
        # max(): a counter never goes back, unless it wrapped; report no
        # activity rather than a huge negative number then.
        return {"swap_in": max(0, counters[0] - previous[0]),
                "swap_out": max(0, counters[1] - previous[1])}
