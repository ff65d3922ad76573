"""momd as a whole: builds the engine from the configuration and runs it.

Owns what surrounds the core loop: loading policies, the memory-pressure
trigger, memory hotplug events, plot files, systemd notification and
signals.  The D-Bus window attaches here too, later; the engine itself
stays free of both.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Any

from .collectors import HostCollector
from .config import Config, load_config
from .engine.core import Controllers, Engine, EngineObserver, Evaluation
from .engine.hotplug import MemoryHotplugMonitor
from .engine.notify import notify, watchdog_interval
from .engine.plot import PlotWriter
from .engine.pressure import PressureTrigger
from .hypervisor import HypervisorInterface
from .policy import PolicyError, PolicySet, compile_policy
from .policy_files import find_policy_files, read_policy_texts

log = logging.getLogger(__name__)


def load_policy_texts(sources: list[Path]) -> dict[str, str]:
    """Every policy of the layered sources that reads and compiles.

    A policy that cannot be read or does not compile is skipped with an
    error naming it: the others still manage the host.
    """
    try:
        files = find_policy_files(sources)
    except OSError as e:
        log.error("cannot list policies: %s", e)
        return {}
    texts: dict[str, str] = {}
    for name, path in files.items():
        try:
            text = read_policy_texts({name: path})[name]
            compile_policy(text, name)
        except (OSError, UnicodeDecodeError) as e:
            log.error("policy %s skipped: cannot read %s: %s", name, path, e)
            continue
        except PolicyError as e:
            where = f"{path}:{e.line}" if e.line is not None else str(path)
            log.error("policy %s skipped: %s: %s", name, where, e.message)
            continue
        texts[name] = text
    return texts


def make_hypervisor(config: Config) -> HypervisorInterface:
    """The hypervisor interface for the configured URI."""
    from .hypervisor.libvirt import LibvirtHypervisor
    return LibvirtHypervisor(config.hypervisor_uri)


def make_controllers(config: Config, hypervisor: HypervisorInterface) -> Controllers:
    """The controllers the configuration enables."""
    balloon = ksm = None
    if "Balloon" in config.controllers:
        from .controllers.balloon import BalloonController
        balloon = BalloonController(hypervisor, floor_kib=config.balloon_floor,
                                    dry_run=config.dry_run)
    if "KSM" in config.controllers:
        from .controllers.ksm import KsmController
        ksm = KsmController(dry_run=config.dry_run)
    return Controllers(balloon=balloon, ksm=ksm)


class _Plotter(EngineObserver):
    """Writes each new sample of the host and the guests to the plot files."""

    def __init__(self, engine: Engine, writer: PlotWriter) -> None:
        self.engine = engine
        self.writer = writer

    def host_sampled(self) -> None:
        self.writer.write("host", self.engine.host.latest)

    def guests_sampled(self) -> None:
        for guest in self.engine.guests.values():
            self.writer.write(guest.name, guest.latest)

    def guest_removed(self, uuid: str) -> None:
        pass  # the name is gone with the entity; its file stays for the record


class _Status(EngineObserver):
    """Keeps systemd's status line current; READY=1 after the first evaluation."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.ready = False

    def evaluated(self, evaluation: Evaluation) -> None:
        if not self.ready:
            self.ready = True
            notify("READY=1")
        state = "ok" if evaluation.result.error is None else "policy error"
        connected = "connected" if self.engine.hypervisor.connected else "hypervisor unreachable"
        notify(f"STATUS={len(self.engine.guests)} guests, {connected}, last evaluation "
               f"{evaluation.duration * 1000:.1f} ms ({state})")


class Service:
    """momd: one engine with its surroundings, from start to a clean stop."""

    def __init__(self, config: Config, *, hypervisor: HypervisorInterface | None = None,
                 host_collector: Any | None = None,
                 pressure_path: Path | None = Path("/proc/pressure/memory")) -> None:
        self.config = config
        self.hypervisor = hypervisor or make_hypervisor(config)
        self.policies = PolicySet(load_policy_texts(config.policy_sources()))
        if not len(self.policies):
            log.warning("no policy loaded: guests are watched but nothing is decided")
        self.engine = Engine(
            self.hypervisor, host_collector or HostCollector(), self.policies,
            make_controllers(config, self.hypervisor),
            host_interval=config.host_monitor_interval,
            guest_interval=config.guest_monitor_interval,
            manager_interval=config.guest_manager_interval,
            policy_interval=config.policy_engine_interval,
            history_length=config.sample_history_length,
            dry_run=config.dry_run)
        self.engine.observers.append(_Status(self.engine))
        self.pressure = (PressureTrigger(self.engine.pressure_rose, pressure_path)
                         if pressure_path is not None else None)
        self.hotplug = MemoryHotplugMonitor(self.engine.collect_host)
        self.plot: PlotWriter | None = None
        self._stop = asyncio.Event()
        self._reload = False

    async def run(self) -> None:
        """Run until SIGTERM or SIGINT; SIGHUP reloads policies and verbosity."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        if self.config.plot_dir is not None:
            self.plot = PlotWriter(self.config.plot_dir)
            self.engine.observers.append(_Plotter(self.engine, self.plot))
        log.info("momd starting: %s, policies %s%s", self.hypervisor.uri or "default URI",
                 ", ".join(self.policies.names) or "none",
                 " (dry run: nothing is applied)" if self.config.dry_run else "")
        await self.engine.start()
        if self.pressure is not None:
            self.pressure.start(loop)
        self.hotplug.start(loop)
        watchdog = asyncio.create_task(self._watchdog())
        try:
            while True:
                await self._stop.wait()
                if not self._reload:
                    break
                self._reload = False
                self._stop.clear()
                self.reload()
        finally:
            notify("STOPPING=1")
            watchdog.cancel()
            if self.pressure is not None:
                self.pressure.stop()
            self.hotplug.stop()
            await self.engine.stop()
            if self.plot is not None:
                self.plot.close()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            log.info("momd stopped")

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload = True
        self._stop.set()

    def reload(self) -> None:
        """Re-read the configuration file's verbosity and the policy files."""
        notify("RELOADING=1")
        if self.config.source is not None:
            try:
                fresh = load_config(self.config.source, explicit=True)
                logging.getLogger().setLevel(fresh.verbosity)
            except Exception as e:
                log.error("configuration not reloaded: %s", e)
        texts = load_policy_texts(self.config.policy_sources())
        try:
            self.policies.replace(texts)
        except PolicyError as e:  # load_policy_texts checked them; keep the old set anyway
            log.error("policies not reloaded: %s", e)
        else:
            log.info("policies reloaded: %s", ", ".join(self.policies.names) or "none")
        notify("READY=1")

    async def _watchdog(self) -> None:
        interval = watchdog_interval()
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval)
            # Only a loop that still evaluates may say it is alive: a stuck
            # one is what the watchdog is there to restart.
            if self.engine.healthy(time.time()):
                notify("WATCHDOG=1")
