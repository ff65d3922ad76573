"""The host collector: one sample of the host's statistics, from the configured collectors."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

from .base import HostRoots, HostStatistics, Sample
from .ksm import KSM_SYSFS_DIR
from .registry import HOST_COLLECTORS, implemented


class HostCollector:
    """Takes samples of the host's memory, swap, CPU, KSM and PSI figures.

    ``collectors`` names the host collectors whose fields are sampled (the
    ``[host] collectors`` key; by default every registered one); a name not
    implemented is warned about once, here.  Each :meth:`collect` returns
    one sample under MoM's policy field names
    (:data:`momservice.fields.HOST_FIELDS`), memory in KiB.  Rates (swap
    in/out, ksmd CPU usage) are per interval between two calls.  It only
    reads files, below ``proc_root`` and ``sys_root``, so tests can hand it
    a fake tree.

    An optional source that is missing or unreadable is left out of the
    sample (warned about once until it comes back); only an unusable
    ``/proc/meminfo`` raises :class:`CollectionError` (with HostMemory).
    """

    def __init__(self, proc_root: Path = Path("/proc"),
                 sys_root: Path = Path("/sys"), *,
                 clock: Callable[[], float] = time.monotonic,
                 clock_ticks: int | None = None,
                 collectors: Sequence[str] | None = None,
                 wall_clock: Callable[[], datetime] = datetime.now) -> None:
        self.proc_root = Path(proc_root)
        self.sys_root = Path(sys_root)
        roots = HostRoots(self.proc_root, self.sys_root, clock,
                          clock_ticks if clock_ticks is not None else os.sysconf("SC_CLK_TCK"),
                          wall_clock)
        names = (list(HOST_COLLECTORS) if collectors is None
                 else implemented(collectors, HOST_COLLECTORS, "host collector"))
        chosen: list[HostStatistics] = []
        covered: set[str] = set()
        for name in names:
            kind = HOST_COLLECTORS[name]
            # HostPressure after HostMemory, which includes its fields: not read twice.
            if not kind.fields <= covered:
                chosen.append(kind(roots))
                covered |= kind.fields
        self.collectors: tuple[HostStatistics, ...] = tuple(chosen)

    @property
    def ksm_dir(self) -> Path:
        """The sysfs directory of KSM's tunables and counters."""
        return self.sys_root / KSM_SYSFS_DIR

    @property
    def fields(self) -> frozenset[str]:
        """Every field a sample may carry."""
        return frozenset().union(*(c.fields for c in self.collectors))

    def collect(self, qemu_pids: Iterable[int] | None = None) -> Sample:
        """Return one host sample.

        ``qemu_pids``: the pids of the guests' QEMU processes when the
        caller knows them (from libvirt), which spares a scan of every
        process in /proc; ``None`` scans.
        """
        if qemu_pids is not None:
            qemu_pids = list(qemu_pids)
        sample: Sample = {}
        for collector in self.collectors:
            sample.update(collector.collect(qemu_pids))
        return sample
