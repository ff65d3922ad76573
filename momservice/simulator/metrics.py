"""What the policy lab reports of one run: the figures that tell policies apart."""

from __future__ import annotations

from dataclasses import dataclass, field

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

    def guest_swap_mib_per_guest_hour(self, guests: int) -> float:
        """Guest swap traffic (in and out), MiB per guest and simulated hour."""
        hours = self._seconds / 3600.0
        if guests <= 0 or hours <= 0:
            return 0.0
        return self.guest_swap_pages * 4 / MiB / guests / hours

    def row(self, scenario: str, policy: str) -> dict:
        return {"scenario": scenario, "policy": policy,
                "host_swap_pages": round(self.host_swap_pages),
                "guest_swap_pages": round(self.guest_swap_pages),
                "pressure_seconds": round(self.pressure_seconds),
                "balloon_ops": self.balloon_ops,
                "reclaimed_mib": round(self.reclaimed_mib, 1),
                "worst_shortfall_mib": round(self.worst_shortfall_mib, 1)}


@dataclass
class LabSeries:
    """The figures over time of one run, for plotting: host memory and each guest.

    Sizes MiB, times simulated seconds.  One point per ``every`` seconds at
    most (a week of 10 s steps would be 60 000 points per line).
    """

    every: float = 10.0
    times: list[float] = field(default_factory=list)
    host_total: list[float] = field(default_factory=list)
    host_used: list[float] = field(default_factory=list)     # guests + host in RAM
    host_cache: list[float] = field(default_factory=list)
    host_swap: list[float] = field(default_factory=list)
    pressure_some: list[float] = field(default_factory=list)  # PSI avg10, percent
    guest_names: list[str] = field(default_factory=list)
    balloon: dict[str, list[float]] = field(default_factory=dict)
    working_set: dict[str, list[float]] = field(default_factory=dict)

    def observe(self, simulation: Simulation, dt: float) -> None:
        """Take in the state after one step (kept if ``every`` seconds have passed)."""
        now = simulation.now
        if self.times and now < self.times[-1] + self.every - 1e-9:
            return
        host = simulation.host
        self.times.append(now)
        self.host_total.append(host.total / MiB)
        self.host_used.append(host.in_ram / MiB)
        self.host_cache.append(host.cache / MiB)
        self.host_swap.append(host.swap_usage / MiB)
        self.pressure_some.append(host.pressure_some)
        for guest in simulation.guests.values():
            if guest.name not in self.balloon:
                self.guest_names.append(guest.name)
                self.balloon[guest.name] = []
                self.working_set[guest.name] = []
            self.balloon[guest.name].append(guest.balloon_cur / MiB)
            self.working_set[guest.name].append(guest.working_set / MiB)
