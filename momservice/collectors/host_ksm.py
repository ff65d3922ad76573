"""``HostKSM``: KSM's tunables and counters, ksmd's CPU usage and what KSM could share."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .base import SOURCE_ERRORS, HostRoots, HostStatistics, Sample
from .ksm import KSM_FILES, KSM_SYSFS_DIR, read_ksm
from .procs import PF_KTHREAD, find_kernel_thread, find_qemu_pids, parse_pid_stat, sum_rss


class HostKSM(HostStatistics):
    """The KSM files as ``ksm_*`` fields, ``ksmd_cpu_usage`` (percent of one CPU
    since the previous sample) and ``ksm_shareable`` (the QEMU processes'
    resident memory, KiB)."""

    name = "HostKSM"
    fields = frozenset(KSM_FILES.values()) | {"ksm_shareable", "ksmd_cpu_usage"}

    KSMD_COMM = "ksmd"

    def __init__(self, roots: HostRoots) -> None:
        super().__init__(roots)
        self._ksmd_pid: int | None = None
        # (pid, utime + stime, clock) at the previous sample.
        self._prev_ksmd: tuple[int, int, float] | None = None

    @property
    def ksm_dir(self) -> Path:
        return self.roots.sys_root / KSM_SYSFS_DIR

    def collect(self, qemu_pids: Iterable[int] | None) -> Sample:
        sample: Sample = {}
        ksm = self.optional(str(self.ksm_dir), lambda: read_ksm(self.ksm_dir))
        sample.update(ksm)
        if ksm:
            # ksmd exists exactly when KSM does; without KSM, skip the scan.
            sample.update(self.optional("ksmd", self._ksmd_usage))
        sample.update(self.optional("qemu processes", lambda: self._shareable(qemu_pids)))
        return sample

    def _ksmd_ticks(self) -> tuple[int, int]:
        """Return (pid, utime + stime) of ksmd, finding it if needed."""
        proc_root = self.roots.proc_root
        for _attempt in range(2):
            if self._ksmd_pid is None:
                self._ksmd_pid = find_kernel_thread(proc_root, self.KSMD_COMM)
                if self._ksmd_pid is None:
                    raise FileNotFoundError("no ksmd kernel thread")
            pid = self._ksmd_pid
            try:
                stat = parse_pid_stat((proc_root / str(pid) / "stat").read_text())
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
        except SOURCE_ERRORS:
            self._prev_ksmd = None
            raise
        now = self.roots.clock()
        previous, self._prev_ksmd = self._prev_ksmd, (pid, ticks, now)
        if previous is None or previous[0] != pid:
            return {"ksmd_cpu_usage": 0.0}
        elapsed = now - previous[2]
        if elapsed <= 0:
            return {"ksmd_cpu_usage": 0.0}
        used = max(0, ticks - previous[1])
        return {"ksmd_cpu_usage": used / (elapsed * self.roots.clock_ticks) * 100.0}

    def _shareable(self, qemu_pids: Iterable[int] | None) -> dict[str, int]:
        proc_root = self.roots.proc_root
        pids = find_qemu_pids(proc_root) if qemu_pids is None else qemu_pids
        # RSS, not the configured guest size: KSM can merge only pages
        # that are resident, and a guest that never touched part of its
        # memory offers nothing there to share.  MoM also sums the qemu
        # processes' resident size.
        return {"ksm_shareable": sum_rss(proc_root, pids)}
