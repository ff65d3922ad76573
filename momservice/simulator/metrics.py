"""What the policy lab reports of one run: the figures that tell policies apart."""

from __future__ import annotations

from dataclasses import dataclass

from .simulation import Simulation

MiB = 1024
#: Host PSI "some" (avg10, percent) from which the host counts as under pressure.
#: A reporting choice (a tenth of the time stalled), not a model figure.
PRESSURE_SOME_PERCENT = 10.0


@dataclass
class LabMetrics:
    """Accumulates, step by step, the figures of one scenario under one policy set."""

    host_swap_pages: float = 0.0
    guest_swap_pages: float = 0.0
    pressure_seconds: float = 0.0
    balloon_ops: int = 0
    worst_shortfall_mib: float = 0.0
    _reclaimed_mib_seconds: float = 0.0
    _seconds: float = 0.0
    _start: tuple[float, float] | None = None

    def observe(self, simulation: Simulation, dt: float) -> None:
        """Take in the state after one step of ``dt`` simulated seconds."""
        host = simulation.host
        guests = simulation.guests.values()
        swap = (host.swap_in_pages + host.swap_out_pages,
                sum(g.swap_in_kib + g.swap_out_kib for g in guests) / 4)
        if self._start is None:
            self._start = swap
        self.host_swap_pages = swap[0] - self._start[0]
        self.guest_swap_pages = swap[1] - self._start[1]
        if host.pressure_some >= PRESSURE_SOME_PERCENT:
            self.pressure_seconds += dt
        self._reclaimed_mib_seconds += dt * sum(g.max_kib - g.balloon_cur for g in guests) / MiB
        self._seconds += dt
        shortfall = max((g.working_set - g.balloon_cur for g in guests), default=0.0) / MiB
        self.worst_shortfall_mib = max(self.worst_shortfall_mib, shortfall)

    @property
    def reclaimed_mib(self) -> float:
        """Mean memory held back from the guests by their balloons, MiB."""
        return self._reclaimed_mib_seconds / self._seconds if self._seconds else 0.0

    def row(self, scenario: str, policy: str) -> dict:
        return {"scenario": scenario, "policy": policy,
                "host_swap_pages": round(self.host_swap_pages),
                "guest_swap_pages": round(self.guest_swap_pages),
                "pressure_seconds": round(self.pressure_seconds),
                "balloon_ops": self.balloon_ops,
                "reclaimed_mib": round(self.reclaimed_mib, 1),
                "worst_shortfall_mib": round(self.worst_shortfall_mib, 1)}
