"""Building the simulated hypervisor, host collector and KSM directory from a URI."""

from __future__ import annotations

from pathlib import Path

from .driver import SimulationDriver
from .host_collector import SimHostCollector
from .hypervisor import SimHypervisor
from .scenario import Scenario, parse_uri


def make_simulation_parts(uri: str, *, realtime: bool = True,
                          ksm_dir: Path | None = None,
                          scenario: Scenario | None = None
                          ) -> tuple[SimHypervisor, SimHostCollector, Path]:
    """(hypervisor, host collector, KSM directory) of one simulation.

    ``uri`` is a ``sim://`` URI (ValueError if it is not, or names a bad
    scenario); ``scenario`` replaces what it names when given.  The
    hypervisor drives the clock at wall-clock speed when ``realtime``
    (momd), else the caller advances it with ``hypervisor.step(seconds)``.
    The KSM directory (a new temporary one unless ``ksm_dir``) is where a
    KsmController must write; closing the hypervisor removes it.
    """
    if scenario is None:
        scenario = parse_uri(uri)
    driver = SimulationDriver(scenario, ksm_dir=ksm_dir)
    hypervisor = SimHypervisor(driver, uri=uri, realtime=realtime)
    assert driver.ksm_dir is not None
    return hypervisor, SimHostCollector(driver), driver.ksm_dir.path
