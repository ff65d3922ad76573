"""The host collector: one sample of the host's memory statistics."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterable

from .errors import CollectionError
from .ksm import read_ksm
from .meminfo import meminfo_fields, parse_meminfo, parse_vmstat
from .pressure import memory_pressure_fields
from .procs import (PF_KTHREAD, find_kernel_thread, find_qemu_pids,
                    parse_pid_stat, sum_rss)
from .topology import count_stat_cpus, parse_id_list

log = logging.getLogger(__name__)

Sample = dict[str, int | float]

# What a missing, unreadable or garbled optional source raises.
_SOURCE_ERRORS = (OSError, ValueError, KeyError)


class HostCollector:
    """Takes samples of the host's memory, swap, CPU, KSM and PSI figures.

    Each :meth:`collect` returns one sample under MoM's policy field names
    (:data:`momservice.fields.HOST_FIELDS`), memory in KiB.  The collector
    keeps the previous counters so rates (swap in/out, ksmd CPU usage) are
    per interval between two calls.  It only reads files, below
    ``proc_root`` and ``sys_root``, so tests can hand it a fake tree.

    An optional source that is missing or unreadable is left out of the
    sample (warned about once until it comes back); only an unusable
    ``/proc/meminfo`` raises :class:`CollectionError`.
    """

    KSMD_COMM = "ksmd"

    def __init__(self, proc_root: Path = Path("/proc"),
                 sys_root: Path = Path("/sys"), *,
                 clock: Callable[[], float] = time.monotonic,
                 clock_ticks: int | None = None) -> None:
        self.proc_root = Path(proc_root)
        self.sys_root = Path(sys_root)
        self._clock = clock
        self._clock_ticks = (clock_ticks if clock_ticks is not None
                             else os.sysconf("SC_CLK_TCK"))
        self._prev_swap: tuple[int, int] | None = None
        self._ksmd_pid: int | None = None
        # (pid, utime + stime, clock) at the previous sample.
        self._prev_ksmd: tuple[int, int, float] | None = None
        self._failing: set[str] = set()

    @property
    def ksm_dir(self) -> Path:
        """The sysfs directory of KSM's tunables and counters."""
        return self.sys_root / "kernel/mm/ksm"

    def collect(self, qemu_pids: Iterable[int] | None = None) -> Sample:
        """Return one host sample.

        ``qemu_pids``: the pids of the guests' QEMU processes when the
        caller knows them (from libvirt), which spares a scan of every
        process in /proc; ``None`` scans.
        """
        sample: Sample = dict(self._meminfo())
        sample.update(self._optional("/proc/vmstat", self._swap_activity))
        sample.update(self._optional("cpu count", self._cpu_count))
        ksm = self._optional(str(self.ksm_dir), lambda: read_ksm(self.ksm_dir))
        sample.update(ksm)
        if ksm:
            # ksmd exists exactly when KSM does; without KSM, skip the scan.
            sample.update(self._optional("ksmd", self._ksmd_usage))
        sample.update(self._optional(
            "qemu processes", lambda: self._shareable(qemu_pids)))
        sample.update(self._optional(
            "/proc/pressure/memory", self._pressure))
        return sample

    # -- sources ---------------------------------------------------------

    def _meminfo(self) -> dict[str, int]:
        path = self.proc_root / "meminfo"
        try:
            text = path.read_text()
        except OSError as err:
            raise CollectionError(f"cannot read {path}: {err}") from err
        return meminfo_fields(parse_meminfo(text))

    def _swap_activity(self) -> dict[str, int]:
        try:
            vmstat = parse_vmstat((self.proc_root / "vmstat").read_text())
            counters = (vmstat["pswpin"], vmstat["pswpout"])
        except _SOURCE_ERRORS:
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

    def _cpu_count(self) -> dict[str, int]:
        online = self.sys_root / "devices/system/cpu/online"
        try:
            return {"cpu_count": len(parse_id_list(online.read_text()))}
        except (OSError, ValueError):
            # sysfs may not be mounted (containers); /proc/stat lists
            # only the online CPUs too.
            stat = (self.proc_root / "stat").read_text()
            count = count_stat_cpus(stat)
            if count == 0:
                raise ValueError("no cpu lines in /proc/stat") from None
            return {"cpu_count": count}

    def _ksmd_ticks(self) -> tuple[int, int]:
        """Return (pid, utime + stime) of ksmd, finding it if needed."""
        for attempt in range(2):
            if self._ksmd_pid is None:
                self._ksmd_pid = find_kernel_thread(self.proc_root,
                                                    self.KSMD_COMM)
                if self._ksmd_pid is None:
                    raise FileNotFoundError("no ksmd kernel thread")
            pid = self._ksmd_pid
            try:
                stat = parse_pid_stat(
                    (self.proc_root / str(pid) / "stat").read_text())
            except (OSError, ValueError):
                stat = None
            # The pid may have been reused since: check it is still ksmd.
            if (stat is not None and stat.comm == self.KSMD_COMM
                    and stat.flags & PF_KTHREAD):
                return pid, stat.utime + stat.stime
            self._ksmd_pid = None
        raise FileNotFoundError("ksmd vanished")

    def _ksmd_usage(self) -> dict[str, float]:
        try:
            pid, ticks = self._ksmd_ticks()
        except _SOURCE_ERRORS:
            self._prev_ksmd = None
            raise
        now = self._clock()
        previous, self._prev_ksmd = self._prev_ksmd, (pid, ticks, now)
        if previous is None or previous[0] != pid:
            return {"ksmd_cpu_usage": 0.0}
        elapsed = now - previous[2]
        if elapsed <= 0:
            return {"ksmd_cpu_usage": 0.0}
        used = max(0, ticks - previous[1])
        return {"ksmd_cpu_usage":
                used / (elapsed * self._clock_ticks) * 100.0}

    def _shareable(self, qemu_pids: Iterable[int] | None) -> dict[str, int]:
        pids = (find_qemu_pids(self.proc_root) if qemu_pids is None
                else qemu_pids)
        # RSS, not the configured guest size: KSM can merge only pages
        # that are resident, and a guest that never touched part of its
        # memory offers nothing there to share.  MoM also sums the qemu
        # processes' resident size.
        return {"ksm_shareable": sum_rss(self.proc_root, pids)}

    def _pressure(self) -> dict[str, float]:
        text = (self.proc_root / "pressure/memory").read_text()
        return memory_pressure_fields(text)

    # -- helpers ---------------------------------------------------------

    def _optional(self, source: str, read: Callable[[], dict]) -> dict:
        """Run ``read``; on failure log once per outage and return {}."""
        try:
            fields = read()
        except _SOURCE_ERRORS as err:
            if source not in self._failing:
                self._failing.add(source)
                log.warning("host statistics from %s unavailable, "
                            "leaving them out: %s", source, err)
            return {}
        if source in self._failing:
            self._failing.discard(source)
            log.info("host statistics from %s available again", source)
        return fields
