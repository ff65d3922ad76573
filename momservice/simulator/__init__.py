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

from importlib import import_module
from typing import Any

# What each name is imported from, on first use: momd imports this package
# to read its URI, and loading the whole simulator there (its scenario
# files' TOML reader, its trace reader, its models) cost it 1 MB.
_SOURCES = {
    "SimulationDriver": "driver", "SimHostCollector": "host_collector",
    "SimHypervisor": "hypervisor", "SimKsmDir": "ksm_dir",
    "make_simulation_parts": "parts", "GuestSpec": "scenario", "Scenario": "scenario",
    "WorkloadSpec": "scenario", "default_scenario": "scenario", "from_traces": "scenario",
    "generated": "scenario", "is_sim_uri": "uri", "load_scenario": "scenario",
    "parse_uri": "scenario", "with_overcommit": "scenario", "Simulation": "simulation",
    "Trace": "trace", "load_trace": "trace",
}

__all__ = ["GuestSpec", "Scenario", "SimHostCollector", "SimHypervisor", "SimKsmDir",
           "Simulation", "SimulationDriver", "Trace", "WorkloadSpec", "default_scenario",
           "from_traces", "generated", "is_sim_uri", "load_scenario", "load_trace",
           "make_simulation_parts", "parse_uri", "with_overcommit"]


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{source}", __name__), name)
    globals()[name] = value
    return value
