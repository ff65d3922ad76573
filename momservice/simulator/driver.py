"""Advancing a simulation and keeping its KSM directory in step with it."""

from __future__ import annotations

from pathlib import Path

from .ksm_dir import SimKsmDir
from .scenario import Scenario
from .simulation import Simulation


class SimulationDriver:
    """One simulation and (optionally) its KSM sysfs stand-in, advanced together.

    The hypervisor, the host collector and a lab share one driver: whoever
    advances time goes through ``advance`` so that what a KSM controller
    wrote is taken in before the step and the counters are written after.
    """

    def __init__(self, scenario: Scenario, *, ksm_dir: Path | None = None,
                 with_ksm_dir: bool = True) -> None:
        self.scenario = scenario
        self.simulation = Simulation(scenario)
        self.ksm_dir: SimKsmDir | None = (SimKsmDir(self.simulation.ksm, ksm_dir)
                                          if with_ksm_dir else None)

    @property
    def now(self) -> float:
        """Simulated seconds since the start."""
        return self.simulation.now

    def advance(self, seconds: float, *, until_pressure: bool = False) -> float:
        """Take in the KSM tunables, step the simulation, write the KSM files.

        Returns the seconds advanced (fewer than ``seconds`` when
        ``until_pressure`` and the simulation's pressure trigger fired).
        """
        if self.ksm_dir is not None:
            self.ksm_dir.pull()
        advanced = self.simulation.step(seconds, until_pressure=until_pressure)
        if self.ksm_dir is not None:
            self.ksm_dir.push()
        return advanced

    def sync_ksm(self) -> None:
        """Take in what was written to the KSM files now (as sysfs would)."""
        if self.ksm_dir is not None:
            self.ksm_dir.sync()

    def close(self) -> None:
        """Remove the temporary KSM directory (if the driver made it)."""
        if self.ksm_dir is not None:
            self.ksm_dir.close()
