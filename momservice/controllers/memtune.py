"""Squeezing a guest's QEMU from outside: cgroup memory limits through libvirt's memtune.

A balloon takes memory with the guest's help; a limit takes it without:
the host kernel reclaims the QEMU process's memory above it (clean pages
dropped, the rest to the host's swap).  It is the tool for a guest whose
balloon driver does not answer.  libvirt applies the limits
(``virDomainSetMemoryParameters``); momd never writes a cgroup file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidArgument
from ..hypervisor.base import HypervisorError, HypervisorInterface, HypervisorUnsupported
from ..hypervisor.libvirt_memtune import UNLIMITED_KIB
from ..journal_fields import guest_fields
from .balloon import DEFAULT_FLOOR_KIB
from .base import Decision, Mechanism, MechanismContext
from .refusals import RefusalLog

log = logging.getLogger(__name__)

MEM_SOFT_LIMIT = "mem_soft_limit"
MEM_HARD_LIMIT = "mem_hard_limit"
MEM_SWAP_HARD_LIMIT = "mem_swap_hard_limit"
#: The controls, in the order a report lists them.
LIMITS: tuple[str, ...] = (MEM_SOFT_LIMIT, MEM_HARD_LIMIT, MEM_SWAP_HARD_LIMIT)

#: What QEMU needs beside the guest's RAM, KiB: its code, its libraries
#: and its buffers (a 256 MiB TCG guest's QEMU held 23 MiB of file pages
#: and some 30 MiB of anonymous memory of its own in the e2e test's
#: measurements).  A limit leaves it that much above the guest's floor, so
#: that QEMU itself is not what the kernel reclaims first, or OOM-kills.
QEMU_ALLOWANCE_KIB = 65536

Limits = dict[str, int]


def _as_limit(value: Any) -> int | None:
    """A policy's value as whole KiB (0 = unlimited), None when not a size."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value < 0 or value > UNLIMITED_KIB:  # NaN, negative, too big
        return None
    kib = int(value)
    return 0 if kib >= UNLIMITED_KIB else kib


def current_limits(sample: Mapping[str, Any]) -> Limits:
    """The limits a sample reports (GuestMemTune), 0 for each one absent (unlimited)."""
    return {name: _as_limit(sample.get(name)) or 0 for name in LIMITS}


class MemTuneController(Mechanism):
    """Applies the policies' cgroup memory limits to guests through libvirt.

    Controls ``mem_soft_limit``, ``mem_hard_limit``, ``mem_swap_hard_limit``
    (KiB; 0 lifts the limit; a control the policy does not set leaves that
    limit as it is).  Checked on the limits the guest would end up with:
    a limited soft limit at most the hard one, the hard one at most the
    swap one (libvirt's rule), and none below the guest's floor,
    ``max(balloon_min, balloon floor) + QEMU_ALLOWANCE_KIB``.  A request
    that fails a check is refused whole, with the reason logged once per
    guest (the policy asks again every round); only the limits that differ
    from the guest's current ones are sent.
    """

    name = "MemTune"
    entity = "guest"
    controls = frozenset(LIMITS)
    needs_hypervisor = True

    @classmethod
    def build(cls, context: MechanismContext) -> "MemTuneController":
        floor = (DEFAULT_FLOOR_KIB if context.balloon_floor_kib is None
                 else context.balloon_floor_kib)
        return cls(context.hypervisor, floor_kib=floor, dry_run=context.dry_run)

    def __init__(self, hypervisor: HypervisorInterface, *, floor_kib: int = DEFAULT_FLOOR_KIB,
                 dry_run: bool = False) -> None:
        self.hypervisor = hypervisor
        self.floor_kib = int(floor_kib)
        self.dry_run = dry_run
        self.refusals = RefusalLog(log, self.name)
        #: What was last applied per guest (all three limits, 0 = unlimited):
        #: the current limits when the samples do not carry them (GuestMemTune
        #: not configured).
        self.applied: dict[str, Limits] = {}
        #: Limit changes sent to the hypervisor (for the figures).
        self.operations = 0

    # -- checks ------------------------------------------------------------------

    def check(self, control: str, value: Any) -> int:
        """A limit as whole KiB (0 = unlimited); InvalidArgument unless a size."""
        if control not in LIMITS:
            raise InvalidArgument(f"the MemTune mechanism has no control {control!r}")
        kib = _as_limit(value)
        if kib is None:
            raise InvalidArgument(f"{control} must be a number of KiB from 0 (unlimited) "
                                  f"to {UNLIMITED_KIB}, got {value!r}")
        return kib

    def floor(self, sample: Mapping[str, Any]) -> int:
        """The lowest limit the guest may get, KiB."""
        guarantee = _as_limit(sample.get("balloon_min")) or 0
        return max(guarantee, self.floor_kib) + QEMU_ALLOWANCE_KIB

    def _current(self, uuid: str, sample: Mapping[str, Any]) -> Limits:
        if any(sample.get(name) is not None for name in LIMITS) or uuid not in self.applied:
            return current_limits(sample)
        return dict(self.applied[uuid])

    def plan(self, uuid: str, requested: Mapping[str, Any],
             sample: Mapping[str, Any]) -> tuple[Limits, Limits]:
        """(the limits to send, the limits the guest ends up with) for a request;
        InvalidArgument, with the reason, when it cannot be applied."""
        current = self._current(uuid, sample)
        wanted = dict(current)
        for control, value in requested.items():
            wanted[control] = self.check(control, value)
        floor = self.floor(sample)
        for control in (MEM_SOFT_LIMIT, MEM_HARD_LIMIT):
            if 0 < wanted[control] < floor and wanted[control] != current[control]:
                raise InvalidArgument(
                    f"{control} {wanted[control]} KiB is below the guest's floor {floor} "
                    f"KiB (max(balloon_min {sample.get('balloon_min')}, floor "
                    f"{self.floor_kib}) + {QEMU_ALLOWANCE_KIB} for QEMU itself)")
        # An unlimited soft limit under a hard one is the usual case; libvirt
        # refuses a hard limit above the memory-plus-swap one, unlimited too.
        _ordered(wanted, MEM_SOFT_LIMIT, MEM_HARD_LIMIT)
        _ordered(wanted, MEM_HARD_LIMIT, MEM_SWAP_HARD_LIMIT, bounded=True)
        changes = {c: wanted[c] for c in LIMITS if wanted[c] != current[c]}
        return changes, wanted

    # -- the policies' limits ----------------------------------------------------

    async def act(self, decision: Decision) -> dict[str, Limits]:
        """Apply the limits the policies set; returns the changes sent, per guest."""
        applied: dict[str, Limits] = {}
        for uuid, controls in decision.guest_controls.items():
            requested = {c: controls[c] for c in LIMITS if c in controls}
            if not requested:
                continue
            name = decision.guest_names.get(uuid)
            sample = decision.guest_samples.get(uuid, {})
            try:
                changes, wanted = self.plan(uuid, requested, sample)
            except InvalidArgument as refusal:
                self.refusals.refused(uuid, name, "limits", str(refusal), requested)
                continue
            if not changes:
                self.refusals.accepted(uuid, "limits")
                continue
            try:
                await self._send(uuid, name, changes, wanted)
            except HypervisorUnsupported as exc:
                self.refusals.refused(uuid, name, "limits",
                                      f"the hypervisor has no memory tunables here: {exc}")
                continue
            except HypervisorError as exc:
                # The policy asks again every round: said once per reason too
                # (e.g. libvirt's "cgroup memory controller is not mounted").
                self.refusals.refused(uuid, name, "limits", f"libvirt refused: {exc}",
                                      changes)
                continue
            self.refusals.accepted(uuid, "limits")
            applied[uuid] = changes
        present = set(decision.guest_samples) | set(decision.guest_controls)
        self.refusals.forget(present)
        self.forget(present)
        return applied

    # -- limits by hand ----------------------------------------------------------

    async def set_limits(self, uuid: str, limits: Mapping[str, Any], sample: Mapping[str, Any],
                         name: str | None = None) -> Limits:
        """Set limits an administrator asked for; returns the guest's limits after.

        InvalidArgument (nothing sent) when a check fails; HypervisorError
        (HypervisorUnsupported where there are no tunables) from the
        hypervisor propagates.
        """
        changes, wanted = self.plan(uuid, limits, sample)
        if changes:
            await self._send(uuid, name, changes, wanted)
        else:
            log.info("Guest %s: memory limits already %s, nothing to send", _who(uuid, name),
                     _shown(wanted), extra=guest_fields(uuid, name))
        return wanted

    # -- the one writer ----------------------------------------------------------

    async def _send(self, uuid: str, name: str | None, changes: Limits,
                    wanted: Limits) -> None:
        who, about = _who(uuid, name), guest_fields(uuid, name)
        if self.dry_run:
            log.info("Dry run: would set memory limits of guest %s: %s", who, _shown(changes),
                     extra=about)
            return
        log.debug("Sending memory limits of guest %s: %s", who, _shown(changes), extra=about)
        started = time.monotonic()
        try:
            await self.hypervisor.set_mem_tune(uuid, changes)
        except HypervisorError:
            # Part of it may have been applied: the samples say what is.
            self.applied.pop(uuid, None)
            raise
        self.applied[uuid] = wanted
        self.operations += 1
        # The kernel reclaims down to a lowered limit within the call: its
        # duration is the time from the decision to the effect.
        log.info("Set memory limits of guest %s: %s (in %.0f ms)", who, _shown(changes),
                 1000 * (time.monotonic() - started), extra=about)

    def forget(self, uuids: set[str]) -> None:
        """Drop what is kept about guests not in ``uuids`` (gone)."""
        for uuid in [u for u in self.applied if u not in uuids]:
            del self.applied[uuid]


def _ordered(limits: Limits, lower: str, upper: str, *, bounded: bool = False) -> None:
    """``lower`` at most ``upper`` where both are limited; with ``bounded``,
    ``lower`` may not be unlimited under a limited ``upper`` either."""
    if limits[lower] and limits[upper] and limits[lower] > limits[upper]:
        raise InvalidArgument(f"{lower} {limits[lower]} KiB is above {upper} "
                              f"{limits[upper]} KiB")
    if bounded and limits[lower] == 0 and limits[upper]:
        raise InvalidArgument(f"{lower} is unlimited while {upper} is {limits[upper]} KiB")


def _shown(limits: Mapping[str, int]) -> str:
    return ", ".join(f"{c} {'unlimited' if v == 0 else f'{v} KiB'}" for c, v in limits.items())


def _who(uuid: str, name: str | None) -> str:
    return f"{name} ({uuid})" if name else uuid
