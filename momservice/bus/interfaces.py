"""org.ovirt.mom1.Manager, .Host and .Guest: thin views of the core Service.

Every method calls one operation of ``momservice.service.Service``; every
property reads the engine's state.  Access is declared on each member
(see ``access``); the rows of PROPERTIES are the contract's typed
properties (see ``published``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dbus_next.service import dbus_property, method, signal

from .. import __version__
from .access import public, requires
from .names import (ACTION_CONTROL_BALLOON, ACTION_CONTROL_KSM, ACTION_MANAGE_POLICY,
                    GUEST_INTERFACE, HOST_INTERFACE, HOST_PATH, MANAGER_INTERFACE, guest_path)
from .published import Prop, Published, from_variants, to_variants

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
    return controls_by_object(
        {f"ksm_{name}": value for name, value in evaluation.applied_ksm.items()},
        {uuid: {"balloon_target": kib} for uuid, kib in evaluation.applied_balloons.items()})


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
        Prop("Parameters", "a{sv}", lambda m: to_variants(m.service.parameters),
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

    def values(self) -> dict[str, Any]:
        values = super().values()
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


def _host(h: "HostInterface", field: str) -> Any:
    return h.service.engine.host.latest.get(field)


def _host_prop(name: str, field: str, signature: str, doc: str) -> Prop:
    return Prop(name, signature, lambda h: _host(h, field), f"{doc} (policy name {field}).")


class HostInterface(Published):
    """The host: its newest memory, swap, pressure and KSM statistics, and KSM tuning."""

    PROPERTIES = (
        _host_prop("MemTotal", "mem_available", "t", "Total memory, KiB"),
        _host_prop("MemFree", "mem_free", "t", "Free memory plus buffers and page cache, KiB"),
        _host_prop("MemUnused", "mem_unused", "t", "Memory not used at all, KiB"),
        _host_prop("AnonPages", "anon_pages", "t", "Anonymous memory, KiB"),
        _host_prop("SwapTotal", "swap_total", "t", "Swap space, KiB"),
        _host_prop("SwapUsed", "swap_usage", "t", "Swap in use, KiB"),
        _host_prop("SwapIn", "swap_in", "t", "Pages swapped in since the previous sample"),
        _host_prop("SwapOut", "swap_out", "t", "Pages swapped out since the previous sample"),
        _host_prop("CpuCount", "cpu_count", "u", "Online CPUs"),
        _host_prop("MemoryPressureSome", "mem_pressure_some", "d",
                   "PSI memory pressure, some, avg10 percent"),
        _host_prop("MemoryPressureFull", "mem_pressure_full", "d",
                   "PSI memory pressure, full, avg10 percent"),
        _host_prop("KsmRun", "ksm_run", "u", "KSM run state: 0 stopped, 1 running, 2 unmerging"),
        _host_prop("KsmPagesToScan", "ksm_pages_to_scan", "u", "KSM pages to scan per batch"),
        _host_prop("KsmSleepMillisecs", "ksm_sleep_millisecs", "u",
                   "KSM pause between batches, ms"),
        _host_prop("KsmMergeAcrossNodes", "ksm_merge_across_nodes", "u",
                   "Whether KSM merges across NUMA nodes"),
        _host_prop("KsmPagesShared", "ksm_pages_shared", "t", "KSM shared pages"),
        _host_prop("KsmPagesSharing", "ksm_pages_sharing", "t", "Pages sharing KSM pages"),
        _host_prop("KsmPagesUnshared", "ksm_pages_unshared", "t", "Pages KSM could not share"),
        _host_prop("KsmPagesVolatile", "ksm_pages_volatile", "t", "Pages changing too fast to share"),
        _host_prop("KsmFullScans", "ksm_full_scans", "t", "Full KSM scans so far"),
        _host_prop("KsmShareable", "ksm_shareable", "t", "Guest memory KSM could merge, KiB"),
        _host_prop("KsmdCpuUsage", "ksmd_cpu_usage", "d", "CPU used by ksmd, percent"),
        Prop("Statistics", "a{sv}", lambda h: to_variants(h.service.engine.host.latest),
             "The newest host sample under the policy names."),
        Prop("Controls", "a{sv}", lambda h: to_variants(_last(h, "host_controls", {})),
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
    @requires(ACTION_CONTROL_KSM)
    async def SetKsm(self, settings: "a{sv}"):
        """Tune KSM by hand: keys run (0, 1, 2), pages_to_scan, sleep_millisecs, merge_across_nodes."""
        await self.service.set_ksm(from_variants(settings))
        self.service.engine.collect_host()


def _guest_controls(guest: "GuestInterface") -> dict[str, Any]:
    evaluation = guest.service.engine.last_evaluation
    return evaluation.guest_controls.get(guest.uuid, {}) if evaluation is not None else {}


def _guest_prop(name: str, field: str, signature: str, doc: str) -> Prop:
    return Prop(name, signature, lambda g: g.entity.latest.get(field),
                f"{doc} (policy name {field}).")


class GuestInterface(Published):
    """One managed guest: its balloon and the memory statistics its balloon driver reports."""

    PROPERTIES = (
        Prop("Name", "s", lambda g: g.entity.props.get("name"), "The guest's name."),
        Prop("UUID", "s", lambda g: g.uuid, "The guest's UUID."),
        Prop("Pid", "u", lambda g: g.entity.props.get("pid"),
             "The QEMU process id; 0 if unknown."),
        _guest_prop("BalloonCurrent", "balloon_cur", "t", "Memory the balloon leaves the guest, KiB"),
        _guest_prop("BalloonMaximum", "balloon_max", "t", "Maximum memory of the guest, KiB"),
        _guest_prop("BalloonMinimum", "balloon_min", "t", "Guaranteed memory, KiB"),
        _guest_prop("MemAvailable", "mem_available", "t", "Memory the guest sees, KiB"),
        _guest_prop("MemUnused", "mem_unused", "t", "Memory the guest leaves unused, KiB"),
        _guest_prop("MemUsable", "mem_usable", "t", "Memory the guest could use without swapping, KiB"),
        _guest_prop("DiskCaches", "disk_caches", "t", "The guest's disk caches, KiB"),
        _guest_prop("SwapIn", "swap_in", "t", "Swapped in by the guest"),
        _guest_prop("SwapOut", "swap_out", "t", "Swapped out by the guest"),
        _guest_prop("MajorFaults", "major_fault", "t", "Major page faults in the guest"),
        _guest_prop("MinorFaults", "minor_fault", "t", "Minor page faults in the guest"),
        _guest_prop("Rss", "rss", "t", "Resident memory of the QEMU process, KiB"),
        _guest_prop("StatsAge", "stats_age", "d", "Seconds since the guest last reported"),
        Prop("BalloonTarget", "t", lambda g: g.balloon_target,
             "Last balloon target applied, KiB; 0 if none."),
        Prop("Statistics", "a{sv}", lambda g: to_variants(g.entity.latest),
             "The newest sample under the policy names."),
        Prop("Controls", "a{sv}", lambda g: to_variants(_guest_controls(g)),
             "The controls last requested for this guest by the policy."),
    )

    def __init__(self, service: "Service", authorizer: Any, uuid: str) -> None:
        super().__init__(GUEST_INTERFACE, authorizer)
        self.service = service
        self.uuid = uuid
        self.entity = service.engine.guests[uuid]
        self.balloon_target = 0

    @method()
    @public
    def GetHistory(self, field: "s") -> "a(td)":
        """Kept samples of a statistic: (microseconds since the epoch, value)."""
        return [[t, float(v)] for t, v in self.service.get_history(self.uuid, field)]

    @method()
    @requires(ACTION_CONTROL_BALLOON)
    async def SetBalloonTarget(self, kib: "t"):
        """Resize the balloon to kib, within [BalloonMinimum or the floor, BalloonMaximum]."""
        self.balloon_target = await self.service.set_balloon_target(self.uuid, kib)
        self.publish_changes()
