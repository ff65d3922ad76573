"""Running momd's real engine over a simulation, as fast as the machine goes.

The lab plays the engine's loops itself in simulated time: advance the
simulation by ``step`` seconds, sample the host and the guests, resync and
evaluate when their intervals have passed.  The engine's clock is the
simulation's, so sample times, averages and ``healthy`` read simulated time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..controllers import BalloonController, KsmController
from ..controllers.balloon import DEFAULT_FLOOR_KIB
from ..engine.core import Controllers, Engine, Evaluation
from ..policy import PolicySet
from .parts import make_simulation_parts
from .scenario import Scenario
from .simulation import Simulation

#: The engine's clock reads this plus the simulated seconds (a fixed epoch:
#: two runs of one scenario see the same times).
EPOCH = 1_700_000_000.0


@dataclass
class LabRecord:
    """What a lab run saw: one entry per step, and the evaluations."""

    times: list[float] = field(default_factory=list)
    host: list[dict[str, Any]] = field(default_factory=list)
    guests: list[dict[str, dict[str, Any]]] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Lab:
    """An Engine (real policies and controllers) over a lab-mode simulation."""

    def __init__(self, uri: str, policies: PolicySet, *, scenario: Scenario | None = None,
                 floor_kib: int = DEFAULT_FLOOR_KIB, sample_interval: float = 10.0,
                 policy_interval: float = 10.0, resync_interval: float = 60.0,
                 history_length: int = 10, dry_run: bool = False) -> None:
        self.hypervisor, self.host_collector, self.ksm_dir = make_simulation_parts(
            uri, realtime=False, scenario=scenario)
        self.simulation = self.hypervisor.simulation
        controllers = Controllers(
            balloon=BalloonController(self.hypervisor, floor_kib=floor_kib, dry_run=dry_run),
            ksm=KsmController(self.ksm_dir, dry_run=dry_run))
        self.engine = Engine(self.hypervisor, self.host_collector, policies, controllers,
                             host_interval=sample_interval, guest_interval=sample_interval,
                             manager_interval=resync_interval,
                             policy_interval=policy_interval,
                             history_length=history_length, dry_run=dry_run,
                             clock=lambda: EPOCH + self.simulation.now)
        self.sample_interval = sample_interval
        self.policy_interval = policy_interval
        self.resync_interval = resync_interval
        self.record = LabRecord()
        self._next = {"sample": 0.0, "policy": 0.0, "resync": 0.0}

    async def start(self) -> None:
        """The engine's start: connect, first samples, first evaluation."""
        await self.hypervisor.start(self.engine)
        self.engine.collect_host()
        await self.engine.collect_guests()
        self._keep(await self.engine.evaluate(reason="start"))
        now = self.simulation.now
        self._next = {"sample": now + self.sample_interval,
                      "policy": now + self.policy_interval,
                      "resync": now + self.resync_interval}

    async def run(self, seconds: float, step: float | None = None,
                  record: bool = False,
                  observe: Callable[[Simulation, float], None] | None = None) -> None:
        """Advance ``seconds`` of simulated time, ``step`` at a time (the sample interval).

        ``observe(simulation, dt)`` is called after each step (for metrics).
        """
        step = step or self.sample_interval
        end = self.simulation.now + seconds
        while self.simulation.now < end - 1e-9:
            dt = min(step, end - self.simulation.now)
            self.hypervisor.step(dt)
            if observe is not None:
                observe(self.simulation, dt)
            now = self.simulation.now + 1e-9
            if now >= self._next["sample"]:
                self._next["sample"] += self.sample_interval
                self.engine.collect_host()
                await self.engine.collect_guests()
            if now >= self._next["resync"]:
                self._next["resync"] += self.resync_interval
                await self.hypervisor.resync()
            if now >= self._next["policy"]:
                self._next["policy"] += self.policy_interval
                self._keep(await self.engine.evaluate(reason="interval"))
            if record:
                self.record.times.append(self.simulation.now)
                self.record.host.append(dict(self.engine.host.latest))
                self.record.guests.append({u: dict(g.latest)
                                           for u, g in self.engine.guests.items()})

    def _keep(self, evaluation: Evaluation) -> None:
        self.record.evaluations.append(evaluation)
        result = evaluation.result
        if result.error is not None:
            self.record.errors.append(f"policy: {result.error}")
        for guest, error in result.guest_errors.items():
            self.record.errors.append(f"guest {guest.name}: {error}")
        ksm = self.engine.controllers.ksm
        if ksm is not None and ksm.last_errors:
            self.record.errors.extend(f"ksm {k}: {v}" for k, v in ksm.last_errors.items())

    async def stop(self) -> None:
        await self.engine.stop()
