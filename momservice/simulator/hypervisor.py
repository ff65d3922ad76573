"""``sim://``: the simulated hypervisor, behind the engine's HypervisorInterface.

Two ways to let time pass:

* wall clock (``realtime=True``, what momd uses): from ``start`` to
  ``close`` a background task advances the simulation every ``tick`` real
  seconds by the real time elapsed, times ``speed``;
* lab (``realtime=False``): nothing moves by itself; the caller advances
  the simulation with ``step(seconds)``, as fast as it likes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from ..hypervisor.base import (GuestInfo, HypervisorError, HypervisorInterface, HypervisorListener,
                               HypervisorUnsupported)
from ..journal_fields import guest_fields
from .driver import SimulationDriver
from .guest_model import MiB

#: MemTune's limits, by policy name (as the controller sends them).
MEMTUNE_LIMITS = ("mem_soft_limit", "mem_hard_limit", "mem_swap_hard_limit")
from .simulation import Simulation

log = logging.getLogger(__name__)

#: A wall-clock tick never advances more than this (after a suspend, a stall).
MAX_CATCH_UP = 10.0


class SimHypervisor(HypervisorInterface):
    """The guests of a simulation, their balloon statistics and their balloons."""

    def __init__(self, driver: SimulationDriver, *, uri: str = "sim:///",
                 realtime: bool = False, tick: float | None = None,
                 speed: float | None = None, close_driver: bool = True) -> None:
        self.uri = uri
        self.driver = driver
        self.realtime = realtime
        self.tick = float(tick if tick is not None else driver.scenario.step)
        self.speed = float(speed if speed is not None else driver.scenario.speed)
        if self.tick <= 0 or self.speed <= 0:
            raise ValueError("tick and speed must be above 0")
        self._close_driver = close_driver
        self._listener: HypervisorListener | None = None
        self._known: dict[str, GuestInfo] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def simulation(self) -> Simulation:
        return self.driver.simulation

    @property
    def now(self) -> float:
        """Simulated seconds since the start."""
        return self.driver.now

    # -- HypervisorInterface ---------------------------------------------------

    @property
    def connected(self) -> bool:
        return not self._closed

    async def start(self, listener: HypervisorListener) -> None:
        self._listener = listener
        self._closed = False
        log.info("simulated hypervisor %s: %s (%s)", self.uri, self.driver.scenario.name,
                 self.driver.scenario.description or f"{len(self.simulation.guests)} guests")
        await self.resync()
        if self.realtime and self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(
                self._tick_loop(), name="simulation clock")

    async def close(self) -> None:
        self._closed = True
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        if self._close_driver:
            self.driver.close()

    def guests(self) -> dict[str, GuestInfo]:
        return dict(self._known)

    def qemu_pids(self) -> list[int]:
        """No QEMU processes: nothing of the real host belongs to a simulated guest."""
        return []

    async def resync(self) -> None:
        if self._closed:
            return
        running = self.simulation.guests
        for uuid in [u for u in self._known if u not in running]:
            del self._known[uuid]
            self._notify("guest_removed", uuid)
        for uuid, guest in running.items():
            if uuid not in self._known:
                info = GuestInfo(uuid=uuid, name=guest.name, pid=0,
                                 balloon_min=guest.min_guarantee_kib)
                self._known[uuid] = info
                self._notify("guest_added", info)

    async def collect(self) -> dict[str, dict[str, Any]]:
        if self._closed:
            return {}
        samples = self.simulation.guest_samples()
        for uuid, sample in samples.items():
            sample["balloon_min"] = self.simulation.guests[uuid].min_guarantee_kib
        return samples

    async def set_balloon_target(self, uuid: str, kib: int) -> None:
        if self._closed:
            raise HypervisorError("the simulated hypervisor is closed")
        if uuid not in self.simulation.guests:
            raise HypervisorError(f"no simulated guest with UUID {uuid!r}")
        if isinstance(kib, bool) or not isinstance(kib, (int, float)):
            raise HypervisorError(f"balloon target must be a number of KiB, got {kib!r}")
        target = self.simulation.set_balloon_target(uuid, int(kib))
        name = self.simulation.guests[uuid].name
        log.debug("simulated guest %s: balloon target %d KiB (%.0f MiB)",
                  name, target, target / MiB, extra=guest_fields(uuid, name))

    async def set_mem_tune(self, uuid: str, limits: Mapping[str, int]) -> None:
        if self._closed:
            raise HypervisorError("the simulated hypervisor is closed")
        if uuid not in self.simulation.guests:
            raise HypervisorError(f"no simulated guest with UUID {uuid!r}")
        unknown = [k for k in limits if k not in MEMTUNE_LIMITS]
        bad = [v for v in limits.values()
               if isinstance(v, bool) or not isinstance(v, int) or v < 0]
        if unknown or bad:
            raise HypervisorError(f"memory limits must be KiB under {MEMTUNE_LIMITS}, "
                                  f"got {dict(limits)!r}")
        self.simulation.set_mem_tune(uuid, dict(limits))
        name = self.simulation.guests[uuid].name
        log.debug("simulated guest %s: memory limits %s", name, dict(limits),
                  extra=guest_fields(uuid, name))

    async def set_virtio_mem_requested(self, uuid: str, kib: int) -> None:
        if self._closed:
            raise HypervisorError("the simulated hypervisor is closed")
        guest = self.simulation.guests.get(uuid)
        if guest is None:
            raise HypervisorError(f"no simulated guest with UUID {uuid!r}")
        if not guest.virtio_mem_kib:
            raise HypervisorUnsupported(f"simulated guest {guest.name} has no virtio-mem device")
        requested = guest.set_virtio_mem_requested(kib)
        log.debug("simulated guest %s: virtio-mem requested %d KiB", guest.name, requested,
                  extra=guest_fields(uuid, guest.name))

    # -- time ------------------------------------------------------------------

    def step(self, seconds: float, *, until_pressure: bool = False) -> float:
        """Lab mode: advance the simulation by ``seconds`` of simulated time.

        With ``until_pressure``, stop where the simulation's pressure trigger
        fired; returns the seconds advanced.
        """
        return self.driver.advance(seconds, until_pressure=until_pressure)

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.tick)
            now = loop.time()
            elapsed, last = min(now - last, MAX_CATCH_UP), now
            try:
                self.driver.advance(elapsed * self.speed)
            except Exception:  # noqa: BLE001 - the clock must keep going
                log.exception("simulation step failed")
