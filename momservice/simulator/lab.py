"""Running momd's real engine over a simulation, as fast as the machine goes.

The lab plays the engine's loops itself in simulated time: advance the
simulation by ``step`` seconds, sample the host and the guests, resync and
evaluate when their intervals have passed.  The engine's clock is the
simulation's, so sample times, averages and ``healthy`` read simulated time.

Memory pressure reaches the engine as it does in momd: the simulated host
keeps PSI's stall time, a simulated trigger (the line momd writes to
/proc/pressure/memory, ``DEFAULT_TRIGGER``) watches it after every slice
of the simulation, and when it fires the lab stops the step there and
calls ``Engine.pressure_rose``, the callback momd's PressureTrigger calls:
the engine samples and evaluates at once (reason ``pressure``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable

from ..controllers.balloon import DEFAULT_FLOOR_KIB
from ..controllers.base import MechanismContext
from ..controllers.registry import MECHANISMS, build_mechanisms
from ..engine.core import Engine, EngineObserver, Evaluation
from ..engine.pressure import DEFAULT_TRIGGER
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
    #: Times (simulated seconds) the pressure trigger fired.
    pressure_events: list[float] = field(default_factory=list)

    def evaluations_by_reason(self) -> dict[str, int]:
        """How many evaluations each reason caused (start, interval, pressure)."""
        counts: dict[str, int] = {}
        for evaluation in self.evaluations:
            counts[evaluation.reason] = counts.get(evaluation.reason, 0) + 1
        return counts


class _Recorder(EngineObserver):
    """Keeps every evaluation, whichever path (interval, pressure) caused it."""

    def __init__(self, lab: "Lab") -> None:
        self.lab = lab

    def evaluated(self, evaluation: Evaluation) -> None:
        self.lab._keep(evaluation)


class Lab:
    """An Engine (real policies and controllers) over a lab-mode simulation.

    Every registered mechanism acts, built as momd builds them.

    ``pressure_trigger``: the PSI trigger the simulated host signals (as
    momd registers on a real one); None: evaluate at the interval only.
    """

    def __init__(self, uri: str, policies: PolicySet, *, scenario: Scenario | None = None,
                 floor_kib: int = DEFAULT_FLOOR_KIB, sample_interval: float = 10.0,
                 policy_interval: float = 10.0, resync_interval: float = 60.0,
                 history_length: int = 10, dry_run: bool = False,
                 pressure_trigger: str | None = DEFAULT_TRIGGER) -> None:
        self.hypervisor, self.host_collector, self.ksm_dir = make_simulation_parts(
            uri, realtime=False, scenario=scenario)
        self.simulation = self.hypervisor.simulation
        self.mechanisms = build_mechanisms(
            MechanismContext(self.hypervisor, self.ksm_dir, dry_run=dry_run,
                             balloon_floor_kib=floor_kib), MECHANISMS)
        self.engine = Engine(self.hypervisor, self.host_collector, policies,
                             self.mechanisms.enabled,
                             host_interval=sample_interval, guest_interval=sample_interval,
                             manager_interval=resync_interval,
                             policy_interval=policy_interval,
                             history_length=history_length, dry_run=dry_run,
                             clock=lambda: EPOCH + self.simulation.now)
        self.engine.observers.append(_Recorder(self))
        self.simulation.watch_pressure(pressure_trigger)
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
        await self.engine.evaluate(reason="start")
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
        watching = self.simulation.pressure_trigger is not None
        while self.simulation.now < end - 1e-9:
            dt = min(step, end - self.simulation.now)
            dt = self.hypervisor.step(dt, until_pressure=watching)
            if observe is not None:
                observe(self.simulation, dt)
            if self.simulation.pressure_fired:
                self.record.pressure_events.append(self.simulation.now)
                await self._pressure_rose()
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
                await self.engine.evaluate(reason="interval")
            if record:
                self.record.times.append(self.simulation.now)
                self.record.host.append(dict(self.engine.host.latest))
                self.record.guests.append({u: dict(g.latest)
                                           for u, g in self.engine.guests.items()})

    async def _pressure_rose(self) -> None:
        """What momd's trigger does: Engine.pressure_rose; then wait for its reaction.

        The engine reacts in a task of its own: the one that was not there
        before the call (none when a reaction is still running, which then
        goes round again, as in momd).
        """
        before = asyncio.all_tasks()
        self.engine.pressure_rose()
        await asyncio.gather(*(asyncio.all_tasks() - before))

    def _keep(self, evaluation: Evaluation) -> None:
        self.record.evaluations.append(evaluation)
        result = evaluation.result
        if result.error is not None:
            self.record.errors.append(f"policy: {result.error}")
        for guest, error in result.guest_errors.items():
            self.record.errors.append(f"guest {guest.name}: {error}")
        for mechanism in self.engine.mechanisms:
            failures = getattr(mechanism, "last_errors", None) or {}
            self.record.errors.extend(f"{mechanism.name.lower()} {k}: {v}"
                                      for k, v in failures.items())

    async def stop(self) -> None:
        await self.engine.stop()
