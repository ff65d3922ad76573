"""The control loop of momd: collect -> decide -> act, on one asyncio loop.

Host and guests are sampled at their own intervals into Entities (with
bounded history); the policy set is evaluated at the policy interval, and
at once when a memory-pressure trigger fires; controllers apply what it
decided.  Nothing here knows about D-Bus: the bus layer watches the engine
through ``EngineObserver``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..collectors import CollectionError
from ..controllers.base import Decision, Mechanism
from ..controllers.registry import CONTROLS
from ..hypervisor import GuestInfo, HypervisorInterface
from ..journal_fields import guest_fields, policy_error_fields
from ..policy import Entity, EvaluationResult, PolicySet

log = logging.getLogger(__name__)

#: Guest samples taken in before the event loop gets a turn.
_SAMPLE_SLICE = 200


@dataclass
class Evaluation:
    """One evaluation of the policy set and what came of it."""

    started: float                      # wall clock, seconds since the epoch
    duration: float                     # seconds
    reason: str                         # "interval", "pressure", "request", ...
    result: EvaluationResult
    dry_run: bool
    guest_controls: dict[str, dict[str, Any]] = field(default_factory=dict)  # by UUID
    host_controls: dict[str, Any] = field(default_factory=dict)
    #: What each mechanism applied, by its name (see Mechanism.act).
    applied: dict[str, dict[str, Any]] = field(default_factory=dict)
    trigger_time: float | None = None   # monotonic time of the trigger, if any

    @property
    def applied_balloons(self) -> dict[str, int]:
        """Balloon targets applied, by UUID."""
        return self.applied.get("Balloon", {})

    @property
    def applied_ksm(self) -> dict[str, int]:
        """KSM settings written, by file name."""
        return self.applied.get("KSM", {})

    @property
    def changed(self) -> bool:
        return any(self.applied.values())


class EngineObserver:
    """Hooks the engine calls on its loop; override what you need."""

    def guest_added(self, uuid: str) -> None: ...

    def guest_removed(self, uuid: str) -> None: ...

    def host_sampled(self) -> None: ...

    def guests_sampled(self) -> None: ...

    def evaluated(self, evaluation: Evaluation) -> None: ...

    def connection_changed(self, connected: bool) -> None: ...


class Engine:
    """momd's core: keeps the entities, runs the loops, evaluates and applies."""

    def __init__(self, hypervisor: HypervisorInterface, host_collector: Any,
                 policies: PolicySet, mechanisms: Iterable[Mechanism], *,
                 host_interval: float = 5.0, guest_interval: float = 5.0,
                 manager_interval: float = 5.0, policy_interval: float = 10.0,
                 history_length: int = 10, dry_run: bool = False,
                 params: Mapping[str, Any] | None = None,
                 guest_fields_left_out: Iterable[str] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self.hypervisor = hypervisor
        self.host_collector = host_collector
        self.policies = policies
        #: The mechanisms the policies drive, in the order they act.
        self.mechanisms: tuple[Mechanism, ...] = tuple(mechanisms)
        #: Guest fields dropped from the hypervisor's samples: those of the
        #: guest collectors not configured.
        self.guest_fields_left_out: frozenset[str] = frozenset(guest_fields_left_out)
        # Dropped by the hypervisor where it makes each sample when it can;
        # else here, from each sample.
        self._drops_left_out = bool(self.guest_fields_left_out) and not (
            hypervisor is not None and hypervisor.leave_out(self.guest_fields_left_out))
        self.host_interval = host_interval
        self.guest_interval = guest_interval
        self.manager_interval = manager_interval
        self.policy_interval = policy_interval
        self.history_length = history_length
        self.dry_run = dry_run
        self.params: dict[str, Any] = dict(params or {})
        self.clock = clock
        self.host = Entity.host(history_length=history_length)
        self.guests: dict[str, Entity] = {}
        self.stale = False                  # guest samples are from before an outage
        self.last_evaluation: Evaluation | None = None
        self.observers: list[EngineObserver] = []
        self._evaluation_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self._merging: set[asyncio.Task] = set()    # guest_changed's, until done
        self._pressure_task: asyncio.Task | None = None
        self._pressure_again = False
        self._unknown_controls_seen: set[tuple[str, str]] = set()
        self._connected_once = False

    # -- hypervisor listener ---------------------------------------------

    def guest_added(self, info: GuestInfo) -> None:
        if info.uuid in self.guests:
            # A new dict, never a change in place: watchers (the bus) keep
            # the one they saw to compare.
            entity = self.guests[info.uuid]
            props = {**entity.props, **self._props(info)}
            if props != entity.props:
                entity.props = props
            return
        self.guests[info.uuid] = Entity.guest(self._props(info),
                                              history_length=self.history_length)
        log.info("guest %s (%s) is now managed", info.name, info.uuid,
                 extra=guest_fields(info.uuid, info.name))
        self._notify("guest_added", info.uuid)

    def guest_removed(self, uuid: str) -> None:
        entity = self.guests.pop(uuid, None)
        if entity is not None:
            log.info("guest %s (%s) is gone", entity.name, uuid,
                     extra=guest_fields(uuid, entity.name))
            self._notify("guest_removed", uuid)

    def connection_changed(self, connected: bool) -> None:
        if not connected:
            self.stale = True
        self._notify("connection_changed", connected)

    def guest_changed(self, info: GuestInfo) -> None:
        # A definition read again after its event (a virtio-mem device's new
        # size): into the newest sample now, and published, rather than a
        # collection later.
        if info.uuid in self.guests:
            task = asyncio.ensure_future(self._merge_definition(info))
            self._merging.add(task)
            task.add_done_callback(self._merging.discard)

    async def _merge_definition(self, info: GuestInfo) -> None:
        async with self._evaluation_lock:  # not while a policy reads the entity
            entity = self.guests.get(info.uuid)
            if entity is None or not entity.latest:
                return
            entity.merge({k: v for k, v in info.defined.items()
                          if k not in self.guest_fields_left_out})
        self._notify("guests_sampled")

    @staticmethod
    def _props(info: GuestInfo) -> dict[str, Any]:
        return {"name": info.name, "uuid": info.uuid, "pid": info.pid}

    # -- collect -----------------------------------------------------------

    def collect_host(self) -> None:
        """Take one host sample; a failure is logged, the loop goes on."""
        qemu_pids = getattr(self.hypervisor, "qemu_pids", None)
        try:
            sample = self.host_collector.collect(qemu_pids=qemu_pids() if qemu_pids else None)
        except CollectionError as e:
            log.error("host collection failed: %s", e)
            return
        self.host.add_sample(sample, self.clock())
        self._notify("host_sampled")

    async def collect_guests(self) -> None:
        """Take one sample of every running guest in one hypervisor call."""
        samples = await self.hypervisor.collect()
        if not samples and not self.hypervisor.connected:
            return  # keep the last samples; they are marked stale
        self.stale = False
        # Not while an evaluation reads the entities (it runs in a thread).
        async with self._evaluation_lock:
            # Which guests still run is asked after every wait: a guest
            # removed meanwhile (by its lifecycle event) must not come back
            # from a sample taken before it went.
            known = self.hypervisor.guests()
            guests = self.guests
            # One time for the whole collection (the hypervisor read every
            # guest in one go): one float shared by every guest's history,
            # not a thousand kept for each row.
            taken = self.clock()
            handed_over = self.hypervisor.new_samples
            left_out = self.guest_fields_left_out if self._drops_left_out else None
            for count, (uuid, sample) in enumerate(samples.items(), 1):
                if count % _SAMPLE_SLICE == 0:
                    await asyncio.sleep(0)  # let the bus answer between slices
                    known = self.hypervisor.guests()
                entity = guests.get(uuid)
                if entity is None:
                    info = known.get(uuid)
                    if info is None:
                        continue  # vanished between the listing and the sample
                    self.guest_added(info)
                    entity = guests[uuid]
                if left_out:
                    sample = {k: v for k, v in sample.items() if k not in left_out}
                entity.add_sample(sample, taken, handed_over=handed_over)
        self._notify("guests_sampled")

    # -- decide and act -----------------------------------------------------

    async def evaluate(self, *, reason: str = "interval", dry_run: bool | None = None,
                       trigger_time: float | None = None) -> Evaluation:
        """Evaluate the policy set over the newest samples and apply the result."""
        async with self._evaluation_lock:
            dry = self.dry_run if dry_run is None else dry_run
            started, t0 = self.clock(), time.perf_counter()
            # A thousand guests take milliseconds of pure Python: in a worker
            # thread, so that the bus stays responsive.  The entities do not
            # change meanwhile: collections wait for this lock.
            result = await asyncio.to_thread(self.policies.evaluate, self.host,
                                             list(self.guests.values()), dict(self.params))
            evaluation = Evaluation(started, 0.0, reason, result, dry, trigger_time=trigger_time)
            for message in result.messages:
                log.debug("policy: %s", message)
            for guest, error in result.guest_errors.items():
                log.warning("policy error for guest %s, its controls are skipped: %s",
                            guest.name, error,
                            extra=guest_fields(guest.props.get("uuid"), guest.name)
                            | policy_error_fields(error))
            if result.error is not None:
                log.error("policy evaluation failed, nothing applied: %s", result.error,
                          extra=policy_error_fields(result.error))
            else:
                evaluation.host_controls = dict(result.host_controls)
                evaluation.guest_controls = {
                    g.props["uuid"]: dict(c) for g, c in result.guest_controls.items()}
                self._warn_unknown_controls(evaluation)
                await self._apply(evaluation)
            evaluation.duration = time.perf_counter() - t0
            self.last_evaluation = evaluation
        self._notify("evaluated", evaluation)
        return evaluation

    def _warn_unknown_controls(self, evaluation: Evaluation) -> None:
        # A misspelt control is silently useless: say so, once per name.
        requested = {("host", n) for n in evaluation.host_controls}
        for controls in evaluation.guest_controls.values():
            requested.update(("guest", n) for n in controls)
        for kind, name in requested - self._unknown_controls_seen:
            known = CONTROLS[kind].union(*(m.controls for m in self.mechanisms
                                           if m.entity == kind))
            if name not in known:
                self._unknown_controls_seen.add((kind, name))
                log.warning("the policy requests %s control %r, which no controller "
                            "handles (known: %s)", kind, name, ", ".join(sorted(known)))

    async def _apply(self, evaluation: Evaluation) -> None:
        if evaluation.dry_run and not self.dry_run:
            # A dry run asked for once: the decision is the answer, nothing is applied.
            return
        samples = {u: self.guests[u].latest for u in evaluation.guest_controls
                   if u in self.guests}
        decision = Decision(host_controls=evaluation.host_controls,
                            guest_controls=evaluation.guest_controls,
                            guest_samples=samples,
                            guest_names={u: self.guests[u].name for u in samples})
        for mechanism in self.mechanisms:
            wanted = (evaluation.guest_controls if mechanism.entity == "guest"
                      else evaluation.host_controls)
            if not wanted:
                continue
            if mechanism.needs_hypervisor and not self.hypervisor.connected:
                log.info("hypervisor not connected: %s decisions not applied", mechanism.name)
                continue
            evaluation.applied[mechanism.name] = await mechanism.act(decision)

    # -- loops ---------------------------------------------------------------

    def try_out(self, policies: PolicySet | None = None,
                params: Mapping[str, Any] | None = None) -> None:
        """PolicyTrialError unless ``policies`` (default: the active set) with
        ``params`` (default: the current ones) evaluate on the newest samples.

        Nothing is applied or kept.  Before the first host sample there is
        nothing to evaluate on: the check is then left to start-up.
        """
        if not self.host.latest:
            return
        (policies or self.policies).try_out(
            self.host, list(self.guests.values()), self.params if params is None else params)

    async def connect(self) -> None:
        """Connect and take the first samples, once; ``start`` does it if needed."""
        if self._connected_once:
            return
        self._connected_once = True
        await self.hypervisor.start(self)
        self.collect_host()
        await self.collect_guests()

    async def start(self) -> None:
        """Connect, take the first samples and run the first evaluation."""
        await self.connect()
        await self.evaluate(reason="start")
        loop_specs = (
            (self.host_interval, self._host_tick, "host collection"),
            (self.guest_interval, self.collect_guests, "guest collection"),
            (self.manager_interval, self.hypervisor.resync, "guest resync"),
            (self.policy_interval, self._policy_tick, "policy evaluation"),
        )
        self._tasks = [asyncio.create_task(self._every(i, fn, what), name=what)
                       for i, fn, what in loop_specs]

    async def _host_tick(self) -> None:
        async with self._evaluation_lock:
            self.collect_host()

    async def _policy_tick(self) -> None:
        await self.evaluate(reason="interval")

    async def _every(self, interval: float, fn: Callable, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            # Fixed cadence: a slow round does not push the next ones later.
            deadline += interval
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            if loop.time() - deadline > interval:
                deadline = loop.time()
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; trying again in %.1f s", what, interval)

    def pressure_rose(self) -> None:
        """A pressure trigger fired: sample and evaluate now, not at the next interval."""
        trigger_time = time.monotonic()
        if self._pressure_task is not None and not self._pressure_task.done():
            self._pressure_again = True
            return
        self._pressure_task = asyncio.get_running_loop().create_task(
            self._react(trigger_time))

    async def _react(self, trigger_time: float) -> None:
        while True:
            self._pressure_again = False
            try:
                self.collect_host()
                await self.collect_guests()
                evaluation = await self.evaluate(reason="pressure", trigger_time=trigger_time)
                if evaluation.applied_balloons:
                    log.info("memory pressure: balloons moved %.0f ms after the trigger",
                             (time.monotonic() - trigger_time) * 1000)
            except Exception:
                log.exception("reacting to memory pressure failed")
            if not self._pressure_again:
                return
            trigger_time = time.monotonic()

    async def stop(self) -> None:
        """Cancel the loops and disconnect."""
        tasks = self._tasks + ([self._pressure_task] if self._pressure_task else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        self._connected_once = False
        await self.hypervisor.close()

    # -- observers -------------------------------------------------------------

    def _notify(self, hook: str, *args: Any) -> None:
        for observer in list(self.observers):
            try:
                getattr(observer, hook)(*args)
            except Exception:
                log.exception("observer %r failed in %s", observer, hook)

    def set_params(self, params: Mapping[str, Any]) -> None:
        """Merge policy parameters; they are bound before every evaluation."""
        self.params.update(params)

    def healthy(self, now: float | None = None) -> bool:
        """The loop evaluated recently (a failed evaluation still counts)."""
        if self.last_evaluation is None:
            return False
        now = self.clock() if now is None else now
        return now - self.last_evaluation.started < max(3 * self.policy_interval, 30.0)
