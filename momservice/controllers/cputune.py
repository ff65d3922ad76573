"""``CpuTune``: the CFS bandwidth of guests' vCPUs (libvirt's scheduler parameters).

A policy asks for ``vcpu_quota`` and ``vcpu_period`` per guest (MoM's and
vdsm's names, microseconds of CPU time per vCPU per period); the
hypervisor applies them to the running guest's cgroup.  Only a value that
differs from what the guest has is sent: vdsm's policy asks for every
guest at every evaluation, and a thousand guests must not cost a thousand
calls a second.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidArgument
from ..hypervisor.base import HypervisorError, HypervisorInterface, HypervisorUnsupported
from ..journal_fields import guest_fields
from .base import Decision, Mechanism, MechanismContext
from .refusals import RefusalLog

log = logging.getLogger(__name__)

VCPU_QUOTA = "vcpu_quota"
VCPU_PERIOD = "vcpu_period"
#: The keys of a request by hand (``SetCpuTune``) -> the controls they set.
MANUAL_KEYS: dict[str, str] = {"quota": VCPU_QUOTA, "period": VCPU_PERIOD}

#: The ranges libvirt (its qemu driver, over the cgroup cpu controller)
#: accepts, microseconds; -1 is "no quota".
PERIOD_RANGE = (1000, 1000000)
QUOTA_RANGE = (1000, 17592186044415)
UNLIMITED_QUOTA = -1

#: Changes sent before the event loop gets a turn.
_YIELD_EVERY = 10



def check_period(period: int) -> str | None:
    """Why libvirt would refuse ``period`` (us), None when it accepts it."""
    low, high = PERIOD_RANGE
    if not low <= period <= high:
        return f"vcpu_period {period} us is outside libvirt's range {low}..{high} us"
    return None


def check_quota(quota: int) -> str | None:
    """Why libvirt would refuse ``quota`` (us), None when it accepts it."""
    low, high = QUOTA_RANGE
    if quota != UNLIMITED_QUOTA and not low <= quota <= high:
        return (f"vcpu_quota {quota} us is outside libvirt's range: -1 (unlimited) "
                f"or {low}..{high} us")
    return None


_CHECKS = {VCPU_QUOTA: check_quota, VCPU_PERIOD: check_period}


def as_microseconds(value: Any) -> int | None:
    """A policy's number as whole microseconds (rounded: vdsm's policy
    computes fractions), None when not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return round(value)
    return value


class CpuTuneController(Mechanism):
    """Applies the policies' vCPU quota and period to running guests.

    A value outside libvirt's range (period 1000..1000000 us, quota -1 or
    1000..17592186044415 us) is refused, as is one the hypervisor or the
    guest cannot apply (no CPU tuning, no cpu cgroup): the reason is logged
    once per guest, and the guest's other controls still apply.
    """

    name = "CpuTune"
    entity = "guest"
    controls = frozenset({VCPU_QUOTA, VCPU_PERIOD})
    needs_hypervisor = True

    @classmethod
    def build(cls, context: MechanismContext) -> "CpuTuneController":
        return cls(context.hypervisor, dry_run=context.dry_run)

    def __init__(self, hypervisor: HypervisorInterface, *, dry_run: bool = False) -> None:
        self.hypervisor = hypervisor
        self.dry_run = dry_run
        self.refusals = RefusalLog(log, self.name)
        #: Changes sent to the hypervisor (the policies' and by hand).
        self.operations = 0
        #: Per guest and control: the value last sent, and what the guest's
        #: sample said then.  While the sample still says that (it predates
        #: the change) or says nothing (GuestCpuTune not configured), the
        #: value sent is what the guest has.
        self.sent: dict[str, dict[str, tuple[int, Any]]] = {}
        #: Values a guest cannot have (HypervisorUnsupported), not asked again
        #: for that guest: a host of guests without a cpu cgroup must not
        #: cost a failing call per guest per evaluation.
        self.unsupported: dict[str, dict[str, int]] = {}

    def check(self, control: str, value: Any) -> int:
        """``value`` as whole microseconds; InvalidArgument outside libvirt's range."""
        if control not in _CHECKS:
            raise InvalidArgument(f"the CpuTune mechanism has no control {control!r}")
        micros = as_microseconds(value)
        if micros is None:
            raise InvalidArgument(f"{control} must be a number of microseconds, got {value!r}")
        reason = _CHECKS[control](micros)
        if reason is not None:
            raise InvalidArgument(reason)
        return micros

    async def act(self, decision: Decision) -> dict[str, dict[str, int]]:
        """Send each guest's changed quota and period; returns them by UUID."""
        applied: dict[str, dict[str, int]] = {}
        for uuid, controls in decision.guest_controls.items():
            if not self.controls & controls.keys():
                continue
            name = decision.guest_names.get(uuid)
            sample = decision.guest_samples.get(uuid, {})
            changes = self._changes(uuid, name, controls, sample)
            if not changes:
                continue
            try:
                await self._send(uuid, name, changes, sample)
            except HypervisorUnsupported as exc:
                self.unsupported.setdefault(uuid, {}).update(changes)
                for control, value in changes.items():
                    self.refusals.refused(uuid, name, control,
                                          f"this guest or hypervisor has no CPU tuning: {exc}",
                                          value)
                continue
            except HypervisorError as exc:
                for control, value in changes.items():
                    self.refusals.refused(uuid, name, control, str(exc), value)
                continue
            applied[uuid] = changes
            if len(applied) % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # hundreds in a row: let the bus answer meanwhile
        running = set(self.hypervisor.guests())
        if running:
            self.refusals.forget(running)
            for memory in (self.sent, self.unsupported):
                for gone in [u for u in memory if u not in running]:
                    del memory[gone]
        return applied

    def _changes(self, uuid: str, name: str | None, controls: Mapping[str, Any],
                 sample: Mapping[str, Any]) -> dict[str, int]:
        """The requested values that can be applied and differ from the guest's."""
        changes: dict[str, int] = {}
        for control in (VCPU_QUOTA, VCPU_PERIOD):
            if control not in controls:
                continue
            try:
                value = self.check(control, controls[control])
            except InvalidArgument as exc:
                self.refusals.refused(uuid, name, control, str(exc), controls[control])
                continue
            current = sample.get(control)
            last = self.sent.get(uuid, {}).get(control)
            if last is not None and current == last[1]:
                current = last[0]
            if value != current and self.unsupported.get(uuid, {}).get(control) != value:
                changes[control] = value
        return changes

    async def set_by_hand(self, uuid: str, settings: Mapping[str, Any],
                          sample: Mapping[str, Any], name: str | None = None) -> dict[str, int]:
        """Apply ``settings`` (``quota``, ``period``) an administrator asked for.

        InvalidArgument for an unknown key or a value libvirt would refuse
        (nothing sent); HypervisorError from the hypervisor propagates.
        Sent even when the guest has them already (the request is the point).
        Returns the controls set.
        """
        unknown = sorted(set(settings) - MANUAL_KEYS.keys())
        if unknown:
            raise InvalidArgument(f"unknown CPU tuning key(s) {', '.join(unknown)}: "
                                  f"known are {', '.join(MANUAL_KEYS)}")
        if not settings:
            raise InvalidArgument("no CPU tuning given: set quota, period or both")
        changes = {MANUAL_KEYS[key]: self.check(MANUAL_KEYS[key], value)
                   for key, value in settings.items()}
        await self._send(uuid, name, changes, sample)
        return changes

    async def _send(self, uuid: str, name: str | None, changes: dict[str, int],
                    sample: Mapping[str, Any]) -> None:
        who = f"{name} ({uuid})" if name else uuid
        text = ", ".join(f"{control} {value} (was {sample.get(control, 'unknown')})"
                         for control, value in changes.items())
        about = guest_fields(uuid, name)
        if self.dry_run:
            log.info("Dry run: would set CPU tuning of guest %s: %s", who, text, extra=about)
            return
        await self.hypervisor.set_cpu_tune(uuid, quota=changes.get(VCPU_QUOTA),
                                           period=changes.get(VCPU_PERIOD))
        self.operations += 1
        self.unsupported.pop(uuid, None)
        self.sent.setdefault(uuid, {}).update(
            (control, (value, sample.get(control))) for control, value in changes.items())
        for control in changes:
            self.refusals.accepted(uuid, control)
        log.info("Set CPU tuning of guest %s: %s", who, text, extra=about)
