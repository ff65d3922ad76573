"""org.ovirt.mom1.Manager, .Host and .Guest: thin views of the core Service.

Every method calls one operation of ``momservice.service.Service``; every
property reads the engine's state.  Access is declared on each member
(see ``access``); the rows of PROPERTIES are the contract's typed
properties (see ``published``); the statistics' rows are made from the
field catalogue (``momservice.fields``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from dbus_next.service import dbus_property, method, signal

from .. import __version__
from ..contract import (ACTION_CONTROL_BALLOON, ACTION_CONTROL_CPUTUNE, ACTION_CONTROL_IOTUNE,
                        ACTION_CONTROL_KSM, ACTION_CONTROL_MEMTUNE,
                        ACTION_CONTROL_VIRTIO_MEM,
                        ACTION_MANAGE_POLICY,
                        GUEST_INTERFACE, HOST_INTERFACE, HOST_PATH, MANAGER_INTERFACE,
                        guest_path)
from ..fields import (BALLOON_TARGET, GUEST_IDENTITY, GUEST_STATISTICS, HOST_STATISTICS,
                      UNSIGNALLED_FIELDS, Field)
from .access import public, requires
from .published import Prop, Published, Snapshot, from_variants, plain, to_variants

if TYPE_CHECKING:
    from ..engine.core import Evaluation
    from ..service import Service


def _usec(seconds: float | None) -> int:
    return int(seconds * 1_000_000) if seconds else 0


def controls_by_object(host: dict[str, Any], guests: dict[str, dict[str, Any]]) -> dict:
    """Controls as ``a{oa{sv}}``: the host's under the host path, each guest's under its own."""
    result = {guest_path(uuid): to_variants(c) for uuid, c in guests.items() if c}
    if host:
        result[HOST_PATH] = to_variants(host)
    return result


def applied_controls(evaluation: "Evaluation") -> dict:
    """What an evaluation changed, by object, under the policies' control names."""
    guests: dict[str, dict[str, Any]] = {
        uuid: {"balloon_target": kib} for uuid, kib in evaluation.applied_balloons.items()}
    for uuid, disks in evaluation.applied.get("IoTune", {}).items():
        guests.setdefault(uuid, {})["io_tune"] = disks
    for uuid, kib in evaluation.applied.get("VirtioMem", {}).items():
        guests.setdefault(uuid, {})["virtio_mem_requested"] = kib
    for mechanism in ("CpuTune", "MemTune"):   # their changes by control name
        for uuid, changes in evaluation.applied.get(mechanism, {}).items():
            guests.setdefault(uuid, {}).update(changes)
    return controls_by_object(
        {f"ksm_{name}": value for name, value in evaluation.applied_ksm.items()}, guests)


def explain_json(service: "Service", which: str, since_usec: int) -> str:
    """``Explain``'s answer: the records of ``Service.explain`` as a JSON array."""
    # Imported here: only Explain needs it, and momd would keep it loaded.
    import json

    # default=str: a value JSON has no type for (none today) still shows.
    return json.dumps(service.explain(which, since_usec), default=str)


#: The doc string of both Explain methods (introspection; README "momctl explain").
EXPLAIN_DOC = (
    "Why {what} changed: the controls applied since since_usec (microseconds since the "
    "epoch; 0: all kept), oldest first, as a JSON array of objects {{time_usec, reason, "
    "dry_run, changes: [{{control, from, to, policy, line, file}}], inputs: {{guest, host, "
    "guest_means, host_means}}}}; policy and line name the Control call that set the value, "
    "inputs the statistics the policies read, with their values then.")


def _last(interface: Any, attribute: str, default: Any = None) -> Any:
    evaluation = interface.service.engine.last_evaluation
    return getattr(evaluation, attribute) if evaluation is not None else default


def _last_error(manager: "ManagerInterface") -> str:
    evaluation = manager.service.engine.last_evaluation
    if evaluation is None or evaluation.result.error is None:
        return manager.service.policy_load_error
    return str(evaluation.result.error)


class ManagerInterface(Published):
    """momd itself: its policies and parameters, evaluations on request, and their outcome."""

    PROPERTIES = (
        Prop("Version", "s", lambda m: __version__, "Version of momd."),
        Prop("HypervisorURI", "s", lambda m: m.service.hypervisor.uri,
             "The libvirt URI in use."),
        Prop("Connected", "b", lambda m: m.service.hypervisor.connected,
             "Whether the hypervisor connection is up."),
        Prop("Controllers", "as", lambda m: list(m.service.config.controllers),
             "Enabled controllers, e.g. Balloon and KSM."),
        Prop("DryRun", "b", lambda m: m.service.config.dry_run,
             "Decisions are computed and published but not applied."),
        Prop("PolicyNames", "as", lambda m: m.service.policy_names(),
             "Active policies, in evaluation order."),
        Prop("Parameters", "a{sv}", lambda m: m.service.parameters,
             "Policy parameters currently set."),
        Prop("LastEvaluation", "t", lambda m: _usec(_last(m, "started")),
             "Wall-clock time of the last evaluation, microseconds since the epoch; 0 if none."),
        Prop("LastEvaluationDuration", "t", lambda m: _usec(_last(m, "duration")),
             "How long the last evaluation took, in microseconds."),
        Prop("LastPolicyError", "s", _last_error,
             "The error of the last evaluation, else why the policy files are not the "
             "active policies; empty when all is well."),
        Prop("GuestCount", "u", lambda m: len(m.service.engine.guests),
             "Number of managed guests."),
    )

    def __init__(self, service: "Service", authorizer: Any) -> None:
        super().__init__(MANAGER_INTERFACE, authorizer)
        self.service = service

    def values(self, source: Any = None) -> dict[str, Any]:
        values = super().values(source)
        values["Verbosity"] = self.service.verbosity
        return values

    @dbus_property()
    def Verbosity(self) -> "s":
        """Log level of momd (debug, info, warning, error, critical); writable."""
        return self.service.verbosity

    @Verbosity.setter
    @requires(ACTION_MANAGE_POLICY)
    def Verbosity(self, level: "s"):
        self.service.set_verbosity(level)

    @method()
    @public
    def GetPolicies(self) -> "a{ss}":
        """All active policies: name to text."""
        return self.service.policy_texts()

    @method()
    @public
    def GetPolicy(self, name: "s") -> "s":
        """The text of one policy; NotFound if there is none of that name."""
        return self.service.policy_text(name)

    @method()
    @requires(ACTION_MANAGE_POLICY)
    def SetPolicy(self, name: "s", text: "s"):
        """Add or replace a policy, durably; PolicySyntax (with the line), or PolicyFailed when the
        set with it fails on the current statistics, leaves the set as it was."""
        self.service.set_policy(name, text)
        self.publish_changes()

    @method()
    @requires(ACTION_MANAGE_POLICY)
    def DeletePolicy(self, name: "s"):
        """Remove a policy set over the bus (a file's policy comes back, if any); PolicyFailed
        when the set without it fails on the current statistics."""
        self.service.delete_policy(name)
        self.publish_changes()

    @method()
    @requires(ACTION_MANAGE_POLICY)
    def ReloadPolicies(self):
        """Re-read the policy files from disk; PolicyFailed (and LastPolicyError) when they fail
        on the current statistics: the active policies stay."""
        try:
            self.service.reload_policies()
        finally:
            self.publish_changes()  # LastPolicyError may say why they were refused

    @method()
    @requires(ACTION_MANAGE_POLICY)
    def ResetPolicies(self):
        """Drop every policy set over the bus, back to the files; PolicyFailed (nothing dropped)
        when the files alone fail on the current statistics."""
        try:
            self.service.reset_policies()
        finally:
            self.publish_changes()  # LastPolicyError may say why they were refused

    @method()
    @requires(ACTION_MANAGE_POLICY)
    def SetParameters(self, params: "a{sv}"):
        """Merge policy parameters (values b, i, u, x, t, d or s); PolicyFailed when the
        policies fail with them on the current statistics (none merged)."""
        self.service.set_parameters(from_variants(params))
        self.publish_changes()

    @method()
    @requires(ACTION_MANAGE_POLICY)
    async def EvaluateNow(self, dry_run: "b") -> "a{oa{sv}}":
        """Collect, evaluate and (unless dry_run) apply at once; returns the controls per object."""
        evaluation = await self.service.evaluate_now(dry_run)
        return controls_by_object(evaluation.host_controls, evaluation.guest_controls)

    @signal()
    def ControlsApplied(self, controls: dict) -> "a{oa{sv}}":
        """After an evaluation that changed something: what it applied, per object."""
        return controls

    @signal()
    def PolicyFailed(self, message: str) -> "s":
        """After an evaluation that failed: its error."""
        return message


def statistic_props(fields: tuple[Field, ...],
                    sample: Callable[[Any], dict[str, Any]]) -> tuple[Prop, ...]:
    """The typed properties of catalogue rows, each read from the newest ``sample``."""
    def row(field: Field) -> Prop:
        return Prop(field.prop, field.signature, lambda i: sample(i).get(field.name),
                    f"{field.description()} (policy name {field.name}).", field.signalled)
    return tuple(row(f) for f in fields if f.prop)


class HostInterface(Published):
    """The host: its newest memory, swap, pressure and KSM statistics, and KSM tuning."""

    PROPERTIES = (
        *statistic_props(HOST_STATISTICS, lambda h: h.service.engine.host.latest),
        Prop("Statistics", "a{sv}", lambda h: h.service.engine.host.latest,
             "The newest host sample under the policy names."),
        Prop("Controls", "a{sv}", lambda h: _last(h, "host_controls", {}),
             "The host controls last requested by the policy."),
    )

    def __init__(self, service: "Service", authorizer: Any) -> None:
        super().__init__(HOST_INTERFACE, authorizer)
        self.service = service

    @method()
    @public
    def GetHistory(self, field: "s") -> "a(td)":
        """Kept samples of a statistic: (microseconds since the epoch, value)."""
        return [[t, float(v)] for t, v in self.service.get_history("host", field)]

    @method()
    @public
    def Explain(self, since_usec: "t") -> "s":
        return explain_json(self.service, "host", since_usec)

    Explain.__doc__ = EXPLAIN_DOC.format(what="the host")

    @method()
    @requires(ACTION_CONTROL_KSM)
    async def SetKsm(self, settings: "a{sv}"):
        """Tune KSM by hand: keys run (0, 1, 2), pages_to_scan, sleep_millisecs, merge_across_nodes."""
        await self.service.set_ksm(from_variants(settings))
        self.service.engine.collect_host()


#: A guest's controls when the last evaluation requested none (or there was none).
_NO_CONTROLS: dict[str, Any] = {}


class GuestSnapshot(Snapshot):
    """What a guest's signalled properties are read from, as of one moment:
    the engine's own objects, which are replaced, never changed in place
    (an entity's props and newest sample, an evaluation's controls), so
    that holding them costs no copy."""

    __slots__ = ("props", "latest", "revision", "balloon_target", "controls")

    def __init__(self, props: dict[str, Any], latest: dict[str, Any], revision: int,
                 balloon_target: int, controls: dict[str, Any]) -> None:
        self.props = props
        self.latest = latest
        self.revision = revision
        self.balloon_target = balloon_target
        self.controls = controls

    def key(self) -> tuple:
        """The snapshot but its newest sample, whose signalled values are
        equal when their revisions are (``Entity.revision``)."""
        return (self.props, self.revision, self.balloon_target, self.controls)

    def same(self, other: Snapshot) -> bool:
        # A tuple compares its items by identity first: the usual case.
        return isinstance(other, GuestSnapshot) and self.key() == other.key()


class GuestInterface(Published):
    """One managed guest: its balloon and the memory statistics its balloon driver reports."""

    PROPERTIES = (
        *(Prop(f.prop, f.signature, lambda g, f=f: g.props.get(f.name),
               f"{f.description()}.") for f in GUEST_IDENTITY),
        *statistic_props(GUEST_STATISTICS, lambda g: g.latest),
        Prop(BALLOON_TARGET.prop, BALLOON_TARGET.signature, lambda g: g.balloon_target,
             f"{BALLOON_TARGET.description()}."),
        Prop("Statistics", "a{sv}", lambda g: g.latest,
             "The newest sample under the policy names."),
        Prop("Controls", "a{sv}", lambda g: g.controls,
             "The controls last requested for this guest by the policy."),
    )

    def __init__(self, service: "Service", authorizer: Any, uuid: str) -> None:
        super().__init__(GUEST_INTERFACE, authorizer)
        self.service = service
        self.uuid = uuid
        self.entity = service.engine.guests[uuid]
        self.balloon_target = 0

    # The readers of PROPERTIES read these, here and on a GuestSnapshot.
    @property
    def props(self) -> dict[str, Any]:
        return self.entity.props

    @property
    def latest(self) -> dict[str, Any]:
        return self.entity.latest

    @property
    def controls(self) -> dict[str, Any]:
        evaluation = self.service.engine.last_evaluation
        if evaluation is None:
            return _NO_CONTROLS
        return evaluation.guest_controls.get(self.uuid, _NO_CONTROLS)

    def snapshot(self) -> GuestSnapshot:
        entity = self.entity
        return GuestSnapshot(entity.props, entity.latest, entity.revision,
                             self.balloon_target, self.controls)

    #: The unsignalled properties (doubles: StatsAge) and the unsignalled
    #: fields, also in Statistics, are what moves every cycle.
    VOLATILE = frozenset(p.name for p in PROPERTIES if not p.signalled) | UNSIGNALLED_FIELDS

    def entry_key(self) -> Any:
        latest = self.entity.latest
        # Which unsignalled fields the sample has decides the entry's layout;
        # only doubles are written into kept bytes.
        layout = tuple(type(latest.get(f)) for f in _UNSIGNALLED_STATISTICS)
        if not all(t is float or t is type(None) for t in layout):
            return None
        return self.snapshot().key(), layout

    def volatile_values(self) -> dict[str, float]:
        latest = self.entity.latest
        values = {prop.name: plain("d", prop.read(self)) for prop in _VOLATILE_PROPS}
        values.update((f"Statistics/{f}", latest[f]) for f in _UNSIGNALLED_STATISTICS
                      if latest.get(f) is not None)
        return values

    @method()
    @public
    def GetHistory(self, field: "s") -> "a(td)":
        """Kept samples of a statistic: (microseconds since the epoch, value)."""
        return [[t, float(v)] for t, v in self.service.get_history(self.uuid, field)]

    @method()
    @public
    def Explain(self, since_usec: "t") -> "s":
        return explain_json(self.service, self.uuid, since_usec)

    Explain.__doc__ = EXPLAIN_DOC.format(what="this guest")

    @method()
    @requires(ACTION_CONTROL_BALLOON)
    async def SetBalloonTarget(self, kib: "t"):
        """Resize the balloon to kib, within [BalloonMinimum or the floor, BalloonMaximum]."""
        self.balloon_target = await self.service.set_balloon_target(self.uuid, kib)
        self.publish_changes()

    @method()
    @requires(ACTION_CONTROL_IOTUNE)
    async def SetIoTune(self, device: "s", limits: "a{sv}"):
        """Set I/O limits of one disk (target name or source path): keys total_bytes_sec,
        read_bytes_sec, write_bytes_sec, total_iops_sec, read_iops_sec, write_iops_sec
        (0 unlimited, at most 10**15); a group's limits not given stay as they are."""
        await self.service.set_io_tune(self.uuid, device, from_variants(limits))

    @method()
    @requires(ACTION_CONTROL_MEMTUNE)
    async def SetMemTune(self, limits: "a{sv}"):
        """Set the cgroup memory limits of the guest's QEMU by hand: keys soft_limit,
        hard_limit, swap_hard_limit (t, KiB; 0 = unlimited); a key not given stays."""
        await self.service.set_mem_tune(self.uuid, from_variants(limits))
        self.publish_changes()

    @method()
    @requires(ACTION_CONTROL_VIRTIO_MEM)
    async def SetVirtioMemRequested(self, kib: "t"):
        """Ask the virtio-mem device to plug kib KiB (rounded to VirtioMemBlock), within [0, VirtioMemMaximum]."""
        await self.service.set_virtio_mem_requested(self.uuid, kib)


    @method()
    @requires(ACTION_CONTROL_CPUTUNE)
    async def SetCpuTune(self, settings: "a{sv}"):
        """Set the vCPU bandwidth by hand, microseconds: keys quota (x: -1 unlimited, or
        1000..17592186044415) and period (t: 1000..1000000); VcpuQuota and VcpuPeriod follow."""
        await self.service.set_cpu_tune(self.uuid, from_variants(settings))


#: GuestInterface's unsignalled properties: their values are written into kept
#: GetManagedObjects entries, which takes a fixed size (a double).
_VOLATILE_PROPS = tuple(p for p in GuestInterface.PROPERTIES if not p.signalled)
if any(p.signature != "d" for p in _VOLATILE_PROPS):
    raise TypeError("an unsignalled guest property must be a double (d)")
#: The unsignalled guest statistics, in a fixed order.
_UNSIGNALLED_STATISTICS = tuple(sorted(f.name for f in GUEST_STATISTICS
                                       if f.name in UNSIGNALLED_FIELDS))
