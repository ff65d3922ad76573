"""momd as a whole: builds the engine from the configuration and runs it.

Owns what surrounds the core loop: loading policies (the configured files
and directories, overridden by name by the policies stored over the bus),
the memory-pressure trigger, memory hotplug events, plot files, systemd
notification and signals.  Every operation the D-Bus window offers is a
plain method of :class:`Service`, usable without a bus; the bus layer only
translates.  Errors are typed for it: ``ValueError`` (an invalid argument),
``PolicyError`` (a policy that does not parse or check), ``PolicyTrialError``
(a change whose policy set fails when evaluated once), ``KeyError`` (no
such policy, guest or field; its message says which), ``HypervisorError``
and ``OSError`` (the hypervisor or the kernel refused).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .collectors import HostCollector
from .config import Config, ConfigError, load_config, parse_verbosity, shipped_policy_dir
from .controllers.ksm import DEFAULT_KSM_DIR
from .engine.core import Controllers, Engine, EngineObserver, Evaluation
from .engine.hotplug import MemoryHotplugMonitor
from .engine.notify import notify, watchdog_interval
from .engine.plot import PlotWriter
from .engine.pressure import PressureTrigger
from .hypervisor import HypervisorInterface
from .journal_fields import policy_error_fields, policy_fields
from .policy import Entity, PolicyError, PolicySet, PolicyTrialError, compile_policy
from .policy.builtins import BUILTINS
from .policy_files import find_policy_files, read_policy_texts
from .policy_store import PolicyStore, check_name

log = logging.getLogger(__name__)


def load_policy_texts(sources: list[Path], store: PolicyStore | None = None
                      ) -> dict[str, str]:
    """Every policy of the layered sources, then of ``store``, that reads and compiles.

    The store's policies override the sources' by name, as a later source
    overrides an earlier one: the override is chosen before reading, so a
    broken override leaves the name out rather than falling back.  A
    policy that cannot be read or does not compile is skipped with an
    error naming its file: the others still manage the host.
    """
    try:
        files = find_policy_files(sources)
    except OSError as e:
        log.error("cannot list policies: %s", e)
        files = {}
    if store is not None:
        try:
            stored = store.files()
        except OSError as e:
            log.error("cannot list the stored policies in %s: %s", store.directory, e)
            stored = {}
        for name, path in stored.items():
            if name in files:
                log.info("policy %s: %s (set over the bus) overrides %s",
                         name, path, files[name])
        files.update(stored)
    return _load_files(files)


def _load_files(files: Mapping[str, Path]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for name, path in files.items():
        try:
            text = read_policy_texts({name: path})[name]
            compile_policy(text, name)
        except (OSError, UnicodeDecodeError) as e:
            log.error("policy %s skipped: cannot read %s: %s", name, path, e,
                      extra=policy_fields(name))
            continue
        except PolicyError as e:
            where = f"{path}:{e.line}" if e.line is not None else str(path)
            log.error("policy %s skipped: %s: %s", name, where, e.message,
                      extra=policy_fields(name, e.line))
            continue
        texts[name] = text
    return texts


def make_hypervisor(config: Config) -> HypervisorInterface:
    """The hypervisor interface for the configured URI."""
    from .hypervisor.libvirt import LibvirtHypervisor
    return LibvirtHypervisor(config.hypervisor_uri)


def make_controllers(config: Config, hypervisor: HypervisorInterface,
                     ksm_dir: Path = DEFAULT_KSM_DIR) -> Controllers:
    """The controllers the configuration enables; KSM writes ``ksm_dir``."""
    balloon = ksm = None
    if "Balloon" in config.controllers:
        from .controllers.balloon import BalloonController
        balloon = BalloonController(hypervisor, floor_kib=config.balloon_floor,
                                    dry_run=config.dry_run)
    if "KSM" in config.controllers:
        from .controllers.ksm import KsmController
        ksm = KsmController(ksm_dir, dry_run=config.dry_run)
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

    def __init__(self, engine: Engine, load_error: Callable[[], str]) -> None:
        self.engine = engine
        self.load_error = load_error
        self.ready = False

    def evaluated(self, evaluation: Evaluation) -> None:
        if not self.ready:
            self.ready = True
            notify("READY=1")
        if evaluation.result.error is not None:
            state = "policy error"
        elif self.load_error():
            state = "ok; policy files refused, see LastPolicyError"
        else:
            state = "ok"
        connected = "connected" if self.engine.hypervisor.connected else "hypervisor unreachable"
        notify(f"STATUS={len(self.engine.guests)} guests, {connected}, last evaluation "
               f"{evaluation.duration * 1000:.1f} ms ({state})")


class NotFoundError(KeyError):
    """No such policy, guest or field; ``str()`` is the message, unquoted."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


#: Names a policy parameter may not take: the language's own words, the
#: built-in functions and the entities bound at every evaluation.
RESERVED_PARAMETER_NAMES: frozenset[str] = frozenset(
    {"nil", "Host", "Guests", "def", "defun", "let", "if", "with", "and", "or",
     "defvar", "set", "setq"} | set(BUILTINS))
_PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
MAX_PARAMETER_NAME_LENGTH = 128
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1   # what D-Bus integers can carry


def check_parameter(name: object, value: object) -> None:
    """ValueError unless ``name`` = ``value`` can be a policy parameter."""
    if not isinstance(name, str) or not _PARAMETER_NAME.fullmatch(name) \
            or len(name) > MAX_PARAMETER_NAME_LENGTH:
        raise ValueError(
            f"invalid parameter name {name!r}: a policy symbol of at most "
            f"{MAX_PARAMETER_NAME_LENGTH} characters is a letter or '_' followed by "
            f"letters, digits, '_' or '-' (no '.')")
    if name in RESERVED_PARAMETER_NAMES:
        raise ValueError(f"invalid parameter name {name!r}: reserved by the policy language")
    if isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValueError(f"parameter {name}: integer {value} is out of range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"parameter {name}: {value!r} is not a finite number")
        return
    raise ValueError(f"parameter {name}: a value must be a boolean, an integer, "
                     f"a number or a string, got {type(value).__name__}")


class Service:
    """momd: one engine with its surroundings, from start to a clean stop,
    and every operation an administrator may ask of it.

    ``hypervisor``, ``host_collector``, ``pressure_path`` and ``ksm_dir``
    let a test (or a tool) run it away from the real host, ``bus=False``
    without the D-Bus interface; ``ksm_dir``
    defaults to the host collector's KSM directory, so a collector over a
    fake tree never lets the service write the real sysfs.
    """

    def __init__(self, config: Config, *, hypervisor: HypervisorInterface | None = None,
                 host_collector: Any | None = None,
                 pressure_path: Path | None = Path("/proc/pressure/memory"),
                 ksm_dir: Path | None = None, bus: bool = True) -> None:
        self.config = config
        self.bus_enabled = bus
        self.bus: Any | None = None  # the BusServer once on the bus
        self.simulated = False
        if hypervisor is None and host_collector is None:
            from .simulator.scenario import is_sim_uri
            if is_sim_uri(config.hypervisor_uri):
                # sim://: guests, host statistics and KSM are all the simulation's;
                # nothing of the real host is read or written.
                from .simulator import make_simulation_parts
                hypervisor, host_collector, sim_ksm_dir = make_simulation_parts(
                    config.hypervisor_uri)
                if ksm_dir is None:
                    ksm_dir = sim_ksm_dir
                pressure_path = None
                self.simulated = True
        self.hypervisor = hypervisor or make_hypervisor(config)
        collector = host_collector or HostCollector()
        self.ksm_dir = Path(ksm_dir) if ksm_dir is not None else \
            Path(getattr(collector, "ksm_dir", DEFAULT_KSM_DIR))
        self.store = PolicyStore(config.state_dir)
        self.policies = PolicySet(load_policy_texts(config.policy_sources(), self.store))
        if not len(self.policies):
            log.warning("no policy loaded: guests are watched but nothing is decided")
        #: Why the policies on disk are not the active ones (they failed
        #: when evaluated at start-up or on a reload); empty when they are.
        self.policy_load_error = ""
        self.engine = Engine(
            self.hypervisor, collector, self.policies,
            make_controllers(config, self.hypervisor, self.ksm_dir),
            host_interval=config.host_monitor_interval,
            guest_interval=config.guest_monitor_interval,
            manager_interval=config.guest_manager_interval,
            policy_interval=config.policy_engine_interval,
            history_length=config.sample_history_length,
            dry_run=config.dry_run)
        self.engine.observers.append(_Status(self.engine, lambda: self.policy_load_error))
        self.pressure = (PressureTrigger(self.engine.pressure_rose, pressure_path)
                         if pressure_path is not None else None)
        # Hotplug events are the real host's: a simulated one has none.
        self.hotplug = (None if self.simulated
                        else MemoryHotplugMonitor(self.engine.collect_host))
        self.plot: PlotWriter | None = None
        self._request_ksm: Any | None = None
        self._stop = asyncio.Event()
        self._reload = False

    # -- life cycle ------------------------------------------------------------

    async def start(self) -> None:
        """Connect, sample, evaluate once and start the loops and triggers."""
        loop = asyncio.get_running_loop()
        if self.config.plot_dir is not None and self.plot is None:
            self.plot = PlotWriter(self.config.plot_dir)
            self.engine.observers.append(_Plotter(self.engine, self.plot))
        log.info("momd starting: %s, policies %s%s", self.hypervisor.uri or "default URI",
                 ", ".join(self.policies.names) or "none",
                 " (dry run: nothing is applied)" if self.config.dry_run else "")
        await self.engine.connect()
        self._check_startup_policies()
        await self.engine.start()
        if self.pressure is not None:
            self.pressure.start(loop)
        if self.hotplug is not None:
            self.hotplug.start(loop)
        if self.bus_enabled:
            await self._start_bus()

    def _check_startup_policies(self) -> None:
        # The files may fail on this host's statistics: then the shipped
        # defaults manage it rather than nothing at all.
        try:
            self.engine.try_out()
        except PolicyTrialError as e:
            defaults = PolicySet(load_policy_texts([shipped_policy_dir()]))
            self.policy_load_error = (f"the configured policies were not started: {e}; "
                                      f"the shipped default policies run instead")
            log.error("%s (%s)", self.policy_load_error, ", ".join(defaults.names) or "none",
                      extra=policy_error_fields(e))
            self.policies.take(defaults)

    async def _start_bus(self) -> None:
        from .bus.server import BusServer
        server = BusServer(self)
        try:
            await server.start()
        except (OSError, EOFError) as e:
            # No system bus (a bare container, a test): the core runs on,
            # without its window.  Owning the name is another matter: see
            # BusNameTaken, which ends momd.
            log.warning("no D-Bus system bus (%s): running without the bus interface", e)
            return
        self.bus = server

    async def stop(self) -> None:
        """Leave the bus, stop the triggers and the loops, disconnect, close the plot files."""
        if self.bus is not None:
            await self.bus.stop()
            self.bus = None
        if self.pressure is not None:
            self.pressure.stop()
        if self.hotplug is not None:
            self.hotplug.stop()
        await self.engine.stop()
        if self.plot is not None:
            self.plot.close()

    async def run(self) -> None:
        """Run until SIGTERM or SIGINT; SIGHUP reloads policies and verbosity."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        await self.start()
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
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            log.info("momd stopped")

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload = True
        self._stop.set()

    def reload(self) -> None:
        """Re-read the configuration file's verbosity and the policies."""
        notify("RELOADING=1")
        if self.config.source is not None:
            try:
                fresh = load_config(self.config.source, explicit=True)
                logging.getLogger().setLevel(fresh.verbosity)
            except Exception as e:
                log.error("configuration not reloaded: %s", e)
        try:
            self.reload_policies()
        except PolicyTrialError:
            pass  # logged, and kept in policy_load_error
        notify("READY=1")

    # -- policies ----------------------------------------------------------------

    def policy_names(self) -> list[str]:
        """The active policies, in evaluation order."""
        return self.policies.names

    def policy_texts(self) -> dict[str, str]:
        """Name to text of the active policies, in evaluation order."""
        return self.policies.texts

    def policy_text(self, name: str) -> str:
        """The text of one active policy; NotFoundError (a KeyError) if none."""
        try:
            return self.policies.text(name)
        except (KeyError, TypeError):
            raise NotFoundError(f"no policy {name!r}") from None

    def set_policy(self, name: str, text: str) -> None:
        """Add or replace a policy, durably.

        Checked first (ValueError for a bad name, PolicyError with the
        line for a bad text, PolicyTrialError when the set with it fails on
        the current statistics: nothing changes), then written atomically
        to the store (OSError: nothing changes), then made active.
        """
        check_name(name)
        if not isinstance(text, str):
            raise ValueError(f"a policy text must be a string, got {type(text).__name__}")
        candidate = self.policies.copy()
        candidate.set_policy(name, text)
        self.engine.try_out(candidate)
        self.store.save(name, text)
        self.policies.take(candidate)
        log.info("policy %s set: active policies %s", name, ", ".join(self.policies.names))

    def delete_policy(self, name: str) -> None:
        """Delete a policy set over the bus.

        A policy file of the same name becomes active again.  A policy
        that only comes from a policy file or directory is not deleted
        (ValueError): an empty policy of its name overrides it.
        NotFoundError (a KeyError) when there is no such policy;
        PolicyTrialError when the set without it fails (nothing deleted).
        """
        if isinstance(name, str) and name in self.store.names():  # valid names only
            candidate = self._without_stored(name)
            self.engine.try_out(candidate)
            self.store.delete(name)
            self.policies.take(candidate)
            log.info("policy %s deleted: active policies %s", name,
                     ", ".join(self.policies.names) or "none")
            return
        if isinstance(name, str) and name in self.policies:
            raise ValueError(
                f"policy {name!r} comes from a policy file, not from the bus, and cannot "
                f"be deleted over the bus: remove the file and reload, or use "
                f"SetPolicy({name!r}, \"\") to override it durably with an empty policy")
        raise NotFoundError(f"no policy {name!r}")

    def reload_policies(self) -> None:
        """Re-read the policy files and directories and the stored policies;
        bad ones are skipped (logged), the rest replace the active set.

        PolicyTrialError when that set fails on the current statistics:
        the active set stays, and ``policy_load_error`` says why.
        """
        texts = load_policy_texts(self.config.policy_sources(), self.store)
        self._activate_from_disk(self._tried_from_disk(texts, "reloaded"), "reloaded")

    def reset_policies(self) -> list[str]:
        """Delete every policy set over the bus and reload; returns the names removed.

        PolicyTrialError, with nothing deleted, when the policy files alone fail
        on the current statistics.
        """
        files_only = self._tried_from_disk(
            load_policy_texts(self.config.policy_sources()), "reset")
        try:
            removed = self.store.delete_all()
        except OSError:
            self.reload_policies()  # what the store still holds, with the files
            raise
        self._activate_from_disk(files_only, "reset")
        return removed

    def _tried_from_disk(self, texts: dict[str, str], what: str) -> PolicySet:
        """The policies read from disk as a set, tried on the current statistics;
        PolicyTrialError (logged, kept in ``policy_load_error``) when they fail."""
        try:
            candidate = PolicySet(texts)
            self.engine.try_out(candidate)
        except PolicyError as e:  # load_policy_texts compiled each one already
            self.policy_load_error = f"policies not {what}: {e}; the active policies stay"
            log.error("%s", self.policy_load_error, extra=policy_error_fields(e))
            raise
        return candidate

    def _activate_from_disk(self, candidate: PolicySet, what: str) -> None:
        self.policies.take(candidate)
        self.policy_load_error = ""
        log.info("policies %s: %s", what, ", ".join(self.policies.names) or "none")

    def _without_stored(self, name: str) -> PolicySet:
        """The active set once the stored policy ``name`` is gone: with its file, if any."""
        try:
            files = find_policy_files(self.config.policy_sources())
        except OSError as e:
            log.error("cannot list policies: %s", e)
            files = {}
        texts = _load_files({name: files[name]}) if name in files else {}
        candidate = self.policies.copy()
        if name in texts:
            candidate.set_policy(name, texts[name])
        elif name in candidate:
            candidate.delete_policy(name)
        return candidate

    # -- parameters, evaluation, verbosity ------------------------------------------

    @property
    def parameters(self) -> dict[str, Any]:
        """The policy parameters currently set."""
        return dict(self.engine.params)

    def set_parameters(self, params: Mapping[str, Any]) -> None:
        """Merge policy parameters; all are checked first (ValueError: none merged)."""
        if not isinstance(params, Mapping):
            raise ValueError("parameters must be a mapping of names to values")
        for name, value in params.items():
            check_parameter(name, value)
        self.engine.try_out(params={**self.engine.params, **params})
        self.engine.set_params(dict(params))
        log.info("policy parameters set: %s",
                 ", ".join(f"{k}={v!r}" for k, v in params.items()) or "none")

    async def evaluate_now(self, dry_run: bool) -> Evaluation:
        """Collect the host and the guests, evaluate and (unless a dry run) apply now."""
        self.engine.collect_host()
        await self.engine.collect_guests()
        return await self.engine.evaluate(reason="request",
                                          dry_run=bool(dry_run) or self.engine.dry_run)

    @property
    def verbosity(self) -> str:
        """The root logger's level, lower-case (``info``, ``debug``, ...)."""
        return logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()

    def set_verbosity(self, level: str) -> None:
        """Set the log level: a name or MoM's 1-5 (ValueError otherwise)."""
        try:
            value = parse_verbosity("verbosity", level)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        logging.getLogger().setLevel(value)
        log.info("verbosity set to %s", logging.getLevelName(value).lower())

    # -- controls by hand ----------------------------------------------------------

    async def set_ksm(self, settings: Mapping[str, Any]) -> dict[str, int]:
        """Write KSM settings by file name (``run``, ``pages_to_scan``,
        ``sleep_millisecs``, ``merge_across_nodes``); returns what was written.

        ValueError for an unknown key or a bad value (nothing written);
        OSError when the kernel refused a write (the message says which;
        the settings before it were written).
        """
        if not isinstance(settings, Mapping):
            raise ValueError("KSM settings must be a mapping of names to values")
        controller = self._ksm_for_requests()
        written = await controller.set(settings)
        if controller.last_errors:
            done = (f" (written: {', '.join(f'{k}={v}' for k, v in written.items())})"
                    if written else "")
            raise OSError(f"KSM not set: {'; '.join(controller.last_errors.values())}{done}")
        return written

    def _ksm_for_requests(self) -> Any:
        # Not the engine's controller itself: its ``last_errors`` belong to
        # the policy's applies, and one may run while a request waits for an
        # unmerge.  The same directory and dry-run setting, though.
        if self._request_ksm is None:
            from .controllers.ksm import KsmController
            enabled = self.engine.controllers.ksm
            self._request_ksm = KsmController(
                enabled.ksm_dir if enabled is not None else self.ksm_dir,
                dry_run=enabled.dry_run if enabled is not None else self.config.dry_run)
        return self._request_ksm

    async def set_balloon_target(self, uuid: str, kib: int) -> int:
        """Set a managed guest's balloon; returns the target applied.

        NotFoundError (a KeyError) for an unknown guest; ValueError when
        ``kib`` lies outside [max(balloon_min, floor), balloon_max];
        HypervisorError when libvirt refuses.
        """
        entity = self.engine.guests.get(uuid) if isinstance(uuid, str) else None
        if entity is None:
            raise NotFoundError(f"no managed guest {uuid!r}")
        controller = self.engine.controllers.balloon
        if controller is None:
            from .controllers.balloon import BalloonController
            controller = BalloonController(self.hypervisor, floor_kib=self.config.balloon_floor,
                                           dry_run=self.config.dry_run)
        # Without balloon_cur: the sample may be older than the last change,
        # and a request must not be dropped as "already there" on its word.
        sample = {k: v for k, v in entity.latest.items() if k != "balloon_cur"}
        return await controller.set_target(uuid, kib, sample, entity.name)

    # -- history -----------------------------------------------------------------

    def get_history(self, entity: str, field: str) -> list[tuple[int, float]]:
        """(microseconds since the epoch, value) of each kept sample of ``entity``
        (``"host"`` or a guest UUID) where ``field`` has a value, oldest first.

        NotFoundError (a KeyError) for an unknown guest or a field the
        entity does not know.
        """
        target = self._entity(entity)
        index = target.schema.index.get(field) if isinstance(field, str) else None
        if index is None:
            raise NotFoundError(f"{target.kind} {target.name} has no statistic {field!r}")
        history: list[tuple[int, float]] = []
        for row, when in zip(target.history, target.times):
            if when is None or len(row) <= index:
                continue
            value = row[index]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            history.append((max(0, int(when * 1_000_000)), float(value)))
        return history

    def _entity(self, which: str) -> Entity:
        if which == "host":
            return self.engine.host
        entity = self.engine.guests.get(which) if isinstance(which, str) else None
        if entity is None:
            raise NotFoundError(f"no managed guest {which!r}")
        return entity

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
