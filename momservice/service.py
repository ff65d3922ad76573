"""momd's operations and life cycle, over parts the composition root built.

Every operation a window (the D-Bus layer, a test, a tool) offers is a
plain method of :class:`Service`; the window only translates.  Refusals
are the core's errors (``momservice.errors``): ``InvalidArgument``,
``NotFound``, ``Failed`` (the hypervisor, the kernel or the disk refused),
``PolicyError`` (a policy that does not parse or check) and
``PolicyTrialError`` (a change whose policy set fails when evaluated once).
The parts (hypervisor, collectors, mechanisms, engine, policy library)
are built by :mod:`momservice.assembly`; the service never picks one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import signal
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .config import Config, ConfigError, load_config, parse_verbosity
from .controllers.registry import Mechanisms
from .engine.core import Engine, Evaluation
from .engine.explain import ExplainLog
from .engine.hotplug import MemoryHotplugMonitor
from .engine.notify import notify, watchdog_interval
from .engine.pressure import PressureTrigger
from .errors import Failed, InvalidArgument, NotFound
from .heap import release_free_memory
from .hypervisor import HypervisorInterface
from .policy import RESERVED_NAMES, Entity, PolicyTrialError
from .policy_library import PolicyLibrary

if TYPE_CHECKING:
    from .engine.plot import PlotWriter

log = logging.getLogger(__name__)

#: Names a policy parameter may not take (the policy language's).
RESERVED_PARAMETER_NAMES: frozenset[str] = RESERVED_NAMES
_PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
MAX_PARAMETER_NAME_LENGTH = 128
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1   # what D-Bus integers can carry


def check_parameter(name: object, value: object) -> None:
    """InvalidArgument unless ``name`` = ``value`` can be a policy parameter."""
    if not isinstance(name, str) or not _PARAMETER_NAME.fullmatch(name) \
            or len(name) > MAX_PARAMETER_NAME_LENGTH:
        raise InvalidArgument(
            f"invalid parameter name {name!r}: a policy symbol of at most "
            f"{MAX_PARAMETER_NAME_LENGTH} characters is a letter or '_' followed by "
            f"letters, digits, '_' or '-' (no '.')")
    if name in RESERVED_PARAMETER_NAMES:
        raise InvalidArgument(f"invalid parameter name {name!r}: reserved by the policy language")
    if isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidArgument(f"parameter {name}: integer {value} is out of range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument(f"parameter {name}: {value!r} is not a finite number")
        return
    raise InvalidArgument(f"parameter {name}: a value must be a boolean, an integer, "
                          f"a number or a string, got {type(value).__name__}")


class Window(Protocol):
    """Something attached to the service that starts and stops with it (the bus)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Service:
    """momd: one engine with its surroundings, from start to a clean stop,
    and every operation an administrator may ask of it.

    ``mechanisms`` are all the registered ones (the engine drives the
    configured ones; requests by hand may use any); ``pressure`` and
    ``hotplug`` are the triggers, None where there are none (a test, the
    simulator).  ``explain`` is the record of applied controls behind
    :meth:`explain`, None where none is kept.  Windows attached with :meth:`attach` start after the
    first evaluation and stop first.
    """

    def __init__(self, config: Config, *, hypervisor: HypervisorInterface, engine: Engine,
                 library: PolicyLibrary, mechanisms: Mechanisms,
                 pressure: PressureTrigger | None = None,
                 hotplug: MemoryHotplugMonitor | None = None,
                 explain: ExplainLog | None = None) -> None:
        self.config = config
        self.hypervisor = hypervisor
        self.engine = engine
        self.library = library
        self.mechanisms = mechanisms
        self.pressure = pressure
        self.hotplug = hotplug
        #: The record of applied controls (None: not kept).
        self.explain_log = explain
        self.windows: list[Window] = []
        self.plot: PlotWriter | None = None
        self._stop = asyncio.Event()
        self._reload = False

    @property
    def policy_load_error(self) -> str:
        """Why the policies on disk are not the active ones; empty when they are."""
        return self.library.load_error

    def attach(self, window: Window) -> None:
        """Start ``window`` with the service and stop it before the service."""
        self.windows.append(window)

    # -- life cycle ------------------------------------------------------------

    async def start(self) -> None:
        """Connect, sample, evaluate once and start the loops, triggers and windows."""
        loop = asyncio.get_running_loop()
        if self.config.plot_dir is not None and self.plot is None:
            from .engine.plot import PlotWriter, Plotter  # only here: momd rarely plots
            self.plot = PlotWriter(self.config.plot_dir)
            self.engine.observers.append(Plotter(self.engine, self.plot))
        log.info("momd starting: %s, policies %s%s", self.hypervisor.uri or "default URI",
                 ", ".join(self.library.active.names) or "none",
                 " (dry run: nothing is applied)" if self.config.dry_run else "")
        await self.engine.connect()
        self.library.check_startup()
        await self.engine.start()
        if self.pressure is not None:
            self.pressure.start(loop)
        if self.hotplug is not None:
            self.hotplug.start(loop)
        for window in self.windows:
            await window.start()
        # Start-up's garbage (the hypervisor's first listing, the first
        # samples, every guest published once) back to the system.
        release_free_memory()

    async def stop(self) -> None:
        """Stop the windows, the triggers and the loops, disconnect, close the plot files."""
        for window in reversed(self.windows):
            await window.stop()
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
        return self.library.active.names

    def policy_texts(self) -> dict[str, str]:
        """Name to text of the active policies, in evaluation order."""
        return self.library.active.texts

    def policy_text(self, name: str) -> str:
        """The text of one active policy; NotFound if none."""
        return self.library.text(name)

    def set_policy(self, name: str, text: str) -> None:
        """Add or replace a policy, durably (see PolicyLibrary.set)."""
        self.library.set(name, text)

    def delete_policy(self, name: str) -> None:
        """Delete a policy set over the bus (see PolicyLibrary.delete)."""
        self.library.delete(name)

    def reload_policies(self) -> None:
        """Re-read every policy source (see PolicyLibrary.reload)."""
        self.library.reload()

    def reset_policies(self) -> list[str]:
        """Delete every policy set over the bus and reload; returns the names removed."""
        return self.library.reset()

    # -- parameters, evaluation, verbosity ------------------------------------------

    @property
    def parameters(self) -> dict[str, Any]:
        """The policy parameters currently set."""
        return dict(self.engine.params)

    def set_parameters(self, params: Mapping[str, Any]) -> None:
        """Merge policy parameters; all are checked first (InvalidArgument: none merged)."""
        if not isinstance(params, Mapping):
            raise InvalidArgument("parameters must be a mapping of names to values")
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
        """Set the log level: a name or MoM's 1-5 (InvalidArgument otherwise)."""
        try:
            value = parse_verbosity("verbosity", level)
        except ConfigError as e:
            raise InvalidArgument(str(e)) from None
        logging.getLogger().setLevel(value)
        log.info("verbosity set to %s", logging.getLevelName(value).lower())

    # -- controls by hand ----------------------------------------------------------

    def _mechanism(self, name: str) -> Any:
        try:
            return self.mechanisms[name]
        except KeyError:
            raise Failed(f"this momd has no {name} mechanism") from None

    async def set_ksm(self, settings: Mapping[str, Any]) -> dict[str, int]:
        """Write KSM settings by file name (``run``, ``pages_to_scan``,
        ``sleep_millisecs``, ``merge_across_nodes``); returns what was written.

        InvalidArgument for an unknown key or a bad value (nothing written);
        Failed when the kernel refused a write (the message says which;
        the settings before it were written).
        """
        return await self._mechanism("KSM").request(settings)

    async def set_balloon_target(self, uuid: str, kib: int) -> int:
        """Set a managed guest's balloon; returns the target applied.

        NotFound for an unknown guest; InvalidArgument when ``kib`` lies
        outside [max(balloon_min, floor), balloon_max]; Failed (a
        HypervisorError) when the hypervisor refuses.
        """
        entity = self._managed_guest(uuid)
        # Without balloon_cur: the sample may be older than the last change,
        # and a request must not be dropped as "already there" on its word.
        sample = {k: v for k, v in entity.latest.items() if k != "balloon_cur"}
        return await self._mechanism("Balloon").set_target(uuid, kib, sample, entity.name)

    async def set_io_tune(self, uuid: str, device: str, limits: Mapping[str, Any]) -> dict[str, int]:
        """Set I/O limits of one disk (target name or source path) of a managed
        guest; returns the limits sent (with the rest of their groups).

        NotFound for an unknown guest or disk; InvalidArgument for an unknown
        limit or a value outside 0..10**15; Failed when libvirt refuses.
        """
        entity = self._managed_guest(uuid)
        if not isinstance(device, str) or not device:
            raise InvalidArgument("a disk (target name or source path) is needed")
        return await self._mechanism("IoTune").set_limits(uuid, device, limits, entity.latest,
                                                          entity.name)

    #: SetMemTune's keys -> MemTune's controls.
    MEMTUNE_KEYS: dict[str, str] = {"soft_limit": "mem_soft_limit",
                                    "hard_limit": "mem_hard_limit",
                                    "swap_hard_limit": "mem_swap_hard_limit"}

    async def set_mem_tune(self, uuid: str, limits: Mapping[str, Any]) -> dict[str, int]:
        """Set a managed guest's cgroup memory limits (keys ``soft_limit``,
        ``hard_limit``, ``swap_hard_limit``, KiB, 0 = unlimited; a key not
        given stays); returns the guest's limits after, by control name.

        NotFound for an unknown guest; InvalidArgument for an unknown key or
        a limit MemTune refuses (nothing sent); Failed when the hypervisor
        refuses or has no memory tunables.
        """
        entity = self._managed_guest(uuid)
        if not isinstance(limits, Mapping):
            raise InvalidArgument("limits must be a mapping of names to KiB")
        unknown = sorted(str(k) for k in limits if k not in self.MEMTUNE_KEYS)
        if unknown:
            raise InvalidArgument(f"unknown memory limit {', '.join(unknown)}: the keys are "
                                  f"{', '.join(self.MEMTUNE_KEYS)}")
        controls = {self.MEMTUNE_KEYS[k]: v for k, v in limits.items()}
        applied = await self._mechanism("MemTune").set_limits(uuid, controls, entity.latest,
                                                             entity.name)
        # The published limits follow at once, not at the next collection.
        await self.engine.collect_guests()
        return applied

    async def set_virtio_mem_requested(self, uuid: str, kib: int) -> int:
        """Ask a managed guest's virtio-mem device for ``kib`` KiB; returns the
        request sent, rounded to the device's block size.

        NotFound for an unknown guest; InvalidArgument when it has no
        virtio-mem device or ``kib`` lies outside 0..virtio_mem_max; Failed
        (a HypervisorError) when the hypervisor refuses.
        """
        entity = self._managed_guest(uuid)
        return await self._mechanism("VirtioMem").set_requested(uuid, kib, entity.latest,
                                                                entity.name)

    async def set_cpu_tune(self, uuid: str, settings: Mapping[str, Any]) -> dict[str, int]:
        """Set a managed guest's vCPU bandwidth: keys ``quota`` (-1 or
        1000..17592186044415) and ``period`` (1000..1000000), microseconds;
        returns the controls set (``vcpu_quota``, ``vcpu_period``).

        NotFound for an unknown guest; InvalidArgument for an unknown key or
        a value out of range (nothing sent); Failed when the hypervisor
        refuses (no CPU tuning for this guest, no cpu cgroup, ...).
        """
        entity = self._managed_guest(uuid)
        return await self._mechanism("CpuTune").set_by_hand(uuid, settings, entity.latest,
                                                           entity.name)

    def _managed_guest(self, uuid: str) -> Entity:
        """The managed guest ``uuid``; NotFound when there is none."""
        entity = self.engine.guests.get(uuid) if isinstance(uuid, str) else None
        if entity is None:
            raise NotFound(f"no managed guest {uuid!r}")
        return entity

    # -- history -----------------------------------------------------------------

    def get_history(self, entity: str, field: str) -> list[tuple[int, float]]:
        """(microseconds since the epoch, value) of each kept sample of ``entity``
        (``"host"`` or a guest UUID) where ``field`` has a value, oldest first.

        NotFound for an unknown guest or a field the entity does not know.
        """
        target = self._entity(entity)
        index = target.schema.index.get(field) if isinstance(field, str) else None
        if index is None:
            raise NotFound(f"{target.kind} {target.name} has no statistic {field!r}")
        history: list[tuple[int, float]] = []
        for row, when in zip(target.history, target.times):
            if when is None or len(row) <= index:
                continue
            value = row[index]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            history.append((max(0, int(when * 1_000_000)), float(value)))
        return history

    def explain(self, which: str, since_usec: int = 0) -> list[dict[str, Any]]:
        """Why ``which`` (``"host"`` or a guest UUID) changed: every control
        applied to it since ``since_usec`` (microseconds since the epoch; 0:
        all that is kept), oldest first, as ``ExplainLog``'s records say
        (``Record.as_dict``).  NotFound for an unknown guest."""
        self._entity(which)
        if isinstance(since_usec, bool) or not isinstance(since_usec, int) or since_usec < 0:
            raise InvalidArgument(f"since must be microseconds since the epoch, "
                                  f"not {since_usec!r}")
        if self.explain_log is None:
            return []
        return [r.as_dict() for r in self.explain_log.story(which, since_usec / 1_000_000)]

    def _entity(self, which: str) -> Entity:
        if which == "host":
            return self.engine.host
        entity = self.engine.guests.get(which) if isinstance(which, str) else None
        if entity is None:
            raise NotFound(f"no managed guest {which!r}")
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
