"""``sim://``: a simulated KVM host for momd, momctl and the lab.

Pure model (no I/O, no asyncio, deterministic per seed):
``workload``, ``guest_model``, ``ksm_model``, ``host_model``, ``simulation``.
Adapters to momd's interfaces: ``hypervisor`` (SimHypervisor),
``host_collector`` (SimHostCollector), ``ksm_dir`` (the KSM sysfs
stand-in the real KsmController writes), ``driver`` (advancing them
together), ``parts`` (all three from a URI), ``lab`` (the real engine in
simulated time).  ``scenario`` reads URIs and TOML scenario files,
``trace`` recorded traces, ``pressure_trigger`` plays the kernel's PSI
trigger for the lab.

Where the model's figures come from: each constant says it, "measured"
(with where: mostly the e2e tests on real QEMU guests under TCG,
tests/e2e/test_real_guests.py, which print their timings), "kernel"
(a Linux default or rule), or "assumed" (a plausible guess, to be
replaced by a measurement when one exists).
"""

from .driver import SimulationDriver
from .host_collector import SimHostCollector
from .hypervisor import SimHypervisor
from .ksm_dir import SimKsmDir
from .parts import make_simulation_parts
from .scenario import (GuestSpec, Scenario, WorkloadSpec, default_scenario, from_traces,
                       generated, is_sim_uri, load_scenario, parse_uri, with_overcommit)
from .simulation import Simulation
from .trace import Trace, load_trace

__all__ = ["GuestSpec", "Scenario", "SimHostCollector", "SimHypervisor", "SimKsmDir",
           "Simulation", "SimulationDriver", "Trace", "WorkloadSpec", "default_scenario",
           "from_traces", "generated", "is_sim_uri", "load_scenario", "load_trace",
           "make_simulation_parts", "parse_uri", "with_overcommit"]
