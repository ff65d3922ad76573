"""A whole simulated host: guests, KSM and host memory on one simulated clock.

Pure: no asyncio, no I/O, no wall clock, no global random state.  The same
scenario (seed included) advanced by the same steps gives the same figures.
"""

from __future__ import annotations

import random
import uuid as uuid_module
from typing import Any

from .guest_model import GuestModel
from .host_model import HostModel
from .ksm_model import KsmModel
from .pressure_trigger import PsiTriggerModel
from .scenario import Scenario
from .workload import Workload

MiB = 1024

#: Namespace of the UUIDs derived from guest names.
GUEST_UUID_NAMESPACE = uuid_module.UUID("6f0d3c1e-5b7a-4d8e-9a41-2c6b9e0f7d13")


def guest_uuid(name: str) -> str:
    """The UUID a simulated guest without one in its scenario gets."""
    return str(uuid_module.uuid5(GUEST_UUID_NAMESPACE, name))


class Simulation:
    """The simulated host; ``step(seconds)`` advances it, ``now`` says how far."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.now = 0.0
        self.guests: dict[str, GuestModel] = {}
        for index, spec in enumerate(scenario.guests):
            uuid = spec.uuid or guest_uuid(spec.name)
            if uuid in self.guests:
                raise ValueError(f"guest {spec.name}: UUID {uuid} is used twice")
            rng = random.Random(f"mom-sim/{scenario.seed}/{index}/{spec.name}")
            load = Workload(spec.workload, spec.memory_mib * MiB, rng)
            self.guests[uuid] = GuestModel(
                spec, uuid, load,
                balloon_rate_kib_s=scenario.balloon_rate_mib_s * MiB,
                deflate_rate_kib_s=scenario.balloon_deflate_rate_mib_s * MiB,
                swap_rate_kib_s=scenario.guest_swap_rate_mib_s * MiB,
                stats_period=scenario.stats_period,
                qemu_overhead_kib=scenario.qemu_overhead_mib * MiB)
        self.ksm = KsmModel(run=scenario.ksm_run, pages_to_scan=scenario.ksm_pages_to_scan,
                            sleep_millisecs=scenario.ksm_sleep_millisecs,
                            merge_across_nodes=scenario.ksm_merge_across_nodes)
        self.host = HostModel(total_kib=scenario.host_memory_mib * MiB,
                              overhead_kib=scenario.host_overhead_mib * MiB,
                              swap_kib=scenario.host_swap_mib * MiB,
                              cache_max_kib=scenario.host_cache_mib * MiB,
                              cpu_count=scenario.cpu_count)
        #: A PSI trigger watched after every step (``watch_pressure``).
        self.pressure_trigger: PsiTriggerModel | None = None
        #: Whether the trigger fired in the last step.
        self.pressure_fired = False
        self._settle()

    def watch_pressure(self, trigger: str | None) -> None:
        """Watch the host's PSI with ``trigger`` (a line as momd writes it; None: stop)."""
        self.pressure_trigger = PsiTriggerModel(trigger) if trigger else None

    def _settle(self) -> None:
        """Fill in the host and KSM figures for the state at time 0."""
        self.ksm.step(0.0, self._ksm_inputs())
        self.host.step(0.0, self.guests_resident, self.ksm.savings_kib)

    # -- time ------------------------------------------------------------------

    def step(self, seconds: float, *, until_pressure: bool = False) -> float:
        """Advance by ``seconds`` of simulated time (in slices of at most max_substep).

        With ``until_pressure``, stop early after the slice in which the
        pressure trigger fired (``pressure_fired``).  Returns the seconds
        advanced.
        """
        if seconds < 0:
            raise ValueError(f"cannot step back in time ({seconds} s)")
        limit = self.scenario.max_substep
        remaining = float(seconds)
        self.pressure_fired = False
        trigger = self.pressure_trigger
        while remaining > 1e-9:
            dt = min(limit, remaining)
            remaining -= dt
            self._substep(dt)
            if trigger is not None and trigger.observe(
                    self.now, self.host.stall_some_seconds, self.host.stall_full_seconds):
                self.pressure_fired = True
                if until_pressure:
                    break
        return float(seconds) - max(0.0, remaining)

    def _substep(self, dt: float) -> None:
        self.now += dt
        now = self.now
        for guest in self.guests.values():
            guest.step(now, dt)
        # The guests' cgroup limits (MemTune), within the swap the host has left.
        swap_room = max(0.0, self.host.swap_total - self.host.swap_usage)
        swapped_in = swapped_out = 0.0
        for guest in self.guests.values():
            if guest.limit > 0 or guest.limit_swapped > 0 or guest.clean_dropped > 0:
                out, back = guest.reclaim(dt, swap_room)
                swap_room = max(0.0, swap_room - out + back)
                swapped_out, swapped_in = swapped_out + out, swapped_in + back
        self.ksm.step(dt, self._ksm_inputs())
        self.host.step(dt, self.guests_resident, self.ksm.savings_kib, self.limit_swapped,
                       swapped_in, swapped_out)

    def _ksm_inputs(self) -> list[tuple[float, float]]:
        return [(g.touched, g.shareable) for g in self.guests.values()]

    # -- figures -----------------------------------------------------------------

    @property
    def guests_resident(self) -> float:
        """KiB the guests hold on the host (RAM and host swap)."""
        return sum(g.resident for g in self.guests.values())

    @property
    def limit_swapped(self) -> float:
        """KiB of guest memory the guests' cgroup limits keep in host swap."""
        return sum(g.limit_swapped for g in self.guests.values())

    @property
    def guest_ram_share(self) -> float:
        """Share of the guests' memory in host RAM rather than host swap, of
        what their limits leave in RAM (the host swaps that part blindly)."""
        resident = self.guests_resident - self.limit_swapped
        if resident <= 0 or self.host.overflow <= 0:
            return 1.0
        return max(0.0, 1.0 - self.host.overflow / resident)

    def set_mem_tune(self, uuid: str, limits: dict[str, int]) -> None:
        """Set cgroup limits on a guest's QEMU (policy names, KiB, 0 = unlimited);
        KeyError if unknown."""
        self.guests[uuid].set_limits(limits)

    def set_balloon_target(self, uuid: str, kib: int) -> int:
        """Move a guest's balloon toward ``kib`` (clamped to [0, max]); KeyError if unknown."""
        return self.guests[uuid].set_target(kib)

    def guest_samples(self) -> dict[str, dict[str, Any]]:
        """Each guest's statistics as libvirt reports them (balloon_min excepted)."""
        share = self.guest_ram_share
        return {uuid: g.sample(self.now, share) for uuid, g in self.guests.items()}

    def state(self) -> tuple:
        """Every changing figure of the simulation (for comparing runs)."""
        host, ksm = self.host, self.ksm
        return (self.now, host.used, host.swap_usage, host.cache, host.swap_in_pages,
                host.swap_out_pages, host.pressure_some, host.pressure_full, ksm.merged,
                ksm.scans, *(g.state() for g in self.guests.values()))
