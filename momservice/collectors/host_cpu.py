"""``HostCpu``: the number of online CPUs."""

from __future__ import annotations

from typing import Iterable

from .base import HostStatistics, Sample
from .topology import count_stat_cpus, parse_id_list


class HostCpu(HostStatistics):
    """``cpu_count`` from sysfs, or from /proc/stat where sysfs is not mounted."""

    name = "HostCpu"
    fields = frozenset({"cpu_count"})

    def collect(self, qemu_pids: Iterable[int] | None) -> Sample:
        return self.optional("cpu count", self._cpu_count)

    def _cpu_count(self) -> dict[str, int]:
        online = self.roots.sys_root / "devices/system/cpu/online"
        try:
            return {"cpu_count": len(parse_id_list(online.read_text()))}
        except (OSError, ValueError):
            # sysfs may not be mounted (containers); /proc/stat lists
            # only the online CPUs too.
            stat = (self.roots.proc_root / "stat").read_text()
            count = count_stat_cpus(stat)
            if count == 0:
                raise ValueError("no cpu lines in /proc/stat") from None
            return {"cpu_count": count}
