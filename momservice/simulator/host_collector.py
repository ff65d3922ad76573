"""The simulated host's statistics, under the HostCollector's field names."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterable

from ..collectors.host_time import time_fields
from .driver import SimulationDriver

#: The simulated wall clock (HostTime) starts at midnight: simulated time 0
#: is the start of a day, whatever the real clock says, so runs repeat.
SIMULATED_START = datetime(2000, 1, 1)


class SimHostCollector:
    """``collect()`` like HostCollector's, from the simulation: nothing real is read.

    Rates (swap in/out in pages, ksmd's CPU usage in percent) are per
    interval between two calls, measured in simulated time.  ``ksm_dir`` is
    the simulated KSM directory, so a Service built with this collector
    points its KSM controller there and never at the real sysfs.
    """

    def __init__(self, driver: SimulationDriver) -> None:
        self.driver = driver
        self._prev_swap: tuple[float, float] | None = None
        self._prev_ksmd: tuple[float, float] | None = None   # (cpu seconds, now)

    @property
    def ksm_dir(self) -> Path | None:
        ksm_dir = self.driver.ksm_dir
        return ksm_dir.path if ksm_dir is not None else None

    def collect(self, qemu_pids: Iterable[int] | None = None) -> dict[str, Any]:
        """One host sample; ``qemu_pids`` is accepted and ignored."""
        self.driver.sync_ksm()   # sysfs shows a written tunable at once
        sim = self.driver.simulation
        host, ksm = sim.host, sim.ksm
        now = sim.now
        swap = (host.swap_in_pages, host.swap_out_pages)
        previous, self._prev_swap = self._prev_swap, swap
        swap_in = swap_out = 0
        if previous is not None:
            swap_in = int(swap[0]) - int(previous[0])
            swap_out = int(swap[1]) - int(previous[1])
        ksmd, self._prev_ksmd = self._prev_ksmd, (ksm.cpu_seconds, now)
        usage = 0.0
        if ksmd is not None and now > ksmd[1]:
            usage = (ksm.cpu_seconds - ksmd[0]) / (now - ksmd[1]) * 100.0
        return {
            "mem_available": int(host.total),
            "mem_free": int(host.unused + host.cache),
            "mem_unused": int(host.unused),
            # Guest RAM is anonymous memory of QEMU; so is part of the host's own.
            "anon_pages": int(max(0.0, host.in_ram - host.overhead / 2)),
            "swap_total": int(host.swap_total),
            "swap_usage": int(host.swap_usage),
            "swap_in": max(0, swap_in),
            "swap_out": max(0, swap_out),
            "cpu_count": host.cpu_count,
            **{f"ksm_{name}": value for name, value in ksm.files().items()},
            # Like the real collector: the guests' resident size (MoM sums QEMU's RSS).
            "ksm_shareable": int(sim.guests_resident * sim.guest_ram_share),
            "ksmd_cpu_usage": usage,
            "mem_pressure_some": round(host.pressure_some, 2),
            "mem_pressure_full": round(host.pressure_full, 2),
            **time_fields(SIMULATED_START + timedelta(seconds=now)),
        }
