"""The composition root: builds momd from its configuration.

The only module that picks the parts: the hypervisor interface (libvirt,
or the simulator for a ``sim://`` URI), the host collector and the guest
collectors' fields (``[host]`` / ``[guest] collectors``), the mechanisms
(every registered one built once; ``controllers`` says which the policies
drive), the policy library, the engine, the triggers, the metrics file
(``metrics-file``) and the service; and,
for momd, the D-Bus window attached to it.  The core never imports the
bus: the bus is given the service here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .collectors import HostCollector
from .collectors.ksm import DEFAULT_KSM_DIR
from .collectors.registry import GUEST_COLLECTORS, HOST_COLLECTORS, guest_fields, host_fields
from .config import Config, shipped_policy_dir
from .controllers.base import MechanismContext
from .controllers.registry import build_mechanisms
from .engine.core import Engine
from .engine.explain import ExplainLog
from .engine.hotplug import MemoryHotplugMonitor
from .engine.notify import StatusNotifier
from .engine.pressure import PressureTrigger
from .heap import ReleaseAfterEvaluations
from .hypervisor import HypervisorInterface
from .policy_cache import PolicyCodeCache
from .policy_library import PolicyLibrary
from .policy_store import PolicyStore
from .service import Service

#: The kernel's memory pressure, where momd registers its PSI trigger.
PRESSURE_FILE = Path("/proc/pressure/memory")


class _SelectedHostFields:
    """A host collector that keeps the configured host collectors' fields only
    (for the simulator's, which models every field at once)."""

    def __init__(self, collector: Any, left_out: Iterable[str]) -> None:
        self.collector = collector
        self.left_out = frozenset(left_out)

    @property
    def ksm_dir(self) -> Path | None:
        return getattr(self.collector, "ksm_dir", None)

    def collect(self, qemu_pids: Iterable[int] | None = None) -> dict[str, Any]:
        sample = self.collector.collect(qemu_pids)
        return {k: v for k, v in sample.items() if k not in self.left_out}


def _all_fields(registry: dict[str, Any]) -> frozenset[str]:
    return frozenset().union(*(kind.fields for kind in registry.values()))


def make_hypervisor(config: Config) -> HypervisorInterface:
    """The libvirt hypervisor interface for the configured URI."""
    from .hypervisor.libvirt import LibvirtHypervisor  # libvirt only where it is used
    return LibvirtHypervisor(config.hypervisor_uri, collectors=config.guest_collectors,
                             collector_options=config.collector_options)


def build_service(config: Config, *, hypervisor: HypervisorInterface | None = None,
                  host_collector: Any | None = None,
                  proc_root: Path = Path("/proc"), sys_root: Path = Path("/sys"),
                  pressure_path: Path | None = PRESSURE_FILE,
                  ksm_dir: Path | None = None) -> Service:
    """momd's service for ``config``, without a window.

    ``hypervisor`` and ``host_collector`` replace the ones the
    configuration names (a test's, a tool's); ``proc_root`` and
    ``sys_root`` move the host collector to a test's tree;
    ``pressure_path`` None means no PSI trigger.  KSM is written in
    ``ksm_dir``, by default the host collector's KSM directory, so a
    collector over a test's tree never lets momd write the real sysfs.
    A ``sim://`` URI (with neither part given) runs on the simulator:
    nothing of the real host is read or written.  ValueError for a bad
    ``sim://`` URI or scenario.
    """
    simulated = False
    if hypervisor is None and host_collector is None:
        from .simulator.uri import is_sim_uri
        if is_sim_uri(config.hypervisor_uri):
            from .simulator import make_simulation_parts
            hypervisor, sim_collector, sim_ksm_dir = make_simulation_parts(
                config.hypervisor_uri)
            left_out = _all_fields(HOST_COLLECTORS) - host_fields(config.host_collectors)
            host_collector = _SelectedHostFields(sim_collector, left_out)
            ksm_dir = ksm_dir if ksm_dir is not None else sim_ksm_dir
            pressure_path = None
            simulated = True
    if hypervisor is None:
        hypervisor = make_hypervisor(config)
    if host_collector is None:
        host_collector = HostCollector(proc_root, sys_root, collectors=config.host_collectors)
    if ksm_dir is None:
        ksm_dir = getattr(host_collector, "ksm_dir", None) or DEFAULT_KSM_DIR

    mechanisms = build_mechanisms(
        MechanismContext(hypervisor, Path(ksm_dir), dry_run=config.dry_run,
                         balloon_floor_kib=config.balloon_floor),
        config.controllers)
    cache_dir = config.policy_cache_dir
    code_cache = PolicyCodeCache(cache_dir) if cache_dir is not None else None
    library = PolicyLibrary(config.policy_sources, PolicyStore(config.state_dir),
                            defaults=[shipped_policy_dir()], code_cache=code_cache)
    engine = Engine(
        hypervisor, host_collector, library.active, mechanisms.enabled,
        host_interval=config.host_monitor_interval,
        guest_interval=config.guest_monitor_interval,
        manager_interval=config.guest_manager_interval,
        policy_interval=config.policy_engine_interval,
        history_length=config.sample_history_length,
        dry_run=config.dry_run,
        guest_fields_left_out=(_all_fields(GUEST_COLLECTORS)
                               - guest_fields(config.guest_collectors)))
    library.try_out = engine.try_out
    explain = ExplainLog(engine, length=config.explain_length,
                         max_age=config.explain_max_age, locate=library.locate)
    engine.observers.append(explain)
    engine.observers.append(StatusNotifier(engine, lambda: library.load_error))
    engine.observers.append(ReleaseAfterEvaluations())
    if config.metrics_file is not None:
        from .metrics import MetricsFileWriter  # only here: 0.1 MB momd needs not otherwise
        engine.observers.append(MetricsFileWriter(engine, config.metrics_file,
                                                  balloon=mechanisms.get("Balloon")))
    pressure = (PressureTrigger(engine.pressure_rose, pressure_path)
                if pressure_path is not None else None)
    # Hotplug events are the real host's: a simulated one has none.
    hotplug = None if simulated else MemoryHotplugMonitor(engine.collect_host)
    return Service(config, hypervisor=hypervisor, engine=engine, library=library,
                   mechanisms=mechanisms, pressure=pressure, hotplug=hotplug,
                   explain=explain)


def attach_bus(service: Service, address: str | None = None) -> None:
    """Give the service its D-Bus window, org.ovirt.mom1 on the system bus."""
    from .bus.server import BusServer  # dbus-next only for momd, not for tools
    service.attach(BusServer(service, address))
