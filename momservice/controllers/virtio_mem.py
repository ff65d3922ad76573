"""Resizing guests' virtio-mem devices: memory the guest really gains or loses.

Unlike a balloon, which takes memory away from a guest that still counts
it, a virtio-mem device plugs and unplugs whole blocks: the guest's own
MemTotal follows, so no balloon statistics are needed to size it safely
(the guest's kernel unplugs only what it can free).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidArgument
from ..hypervisor.base import HypervisorError, HypervisorInterface, HypervisorUnsupported
from ..journal_fields import guest_fields
# The balloon's reading of a policy's number: whole KiB, None unless a size.
from .balloon import _as_kib
from .base import Decision, Mechanism, MechanismContext
from .refusals import RefusalLog

log = logging.getLogger(__name__)

#: The one control it consumes, on each guest (also the statistic of the
#: size libvirt last asked for).
VIRTIO_MEM_REQUESTED = "virtio_mem_requested"

#: Requests sent before the event loop gets a turn.
_YIELD_EVERY = 10


class VirtioMemController(Mechanism):
    """Applies ``virtio_mem_requested`` to guests with a virtio-mem device.

    A request is rounded to the device's block size (``virtio_mem_block``)
    and must lie within 0..``virtio_mem_max``; one outside, or for a guest
    without the device, is refused with the reason (logged once per guest
    and reason).  A request is sent only when it differs from what the
    device was last asked for.  With ``dry_run`` it logs what it would send.
    """

    name = "VirtioMem"
    entity = "guest"
    controls = frozenset({VIRTIO_MEM_REQUESTED})
    needs_hypervisor = True

    @classmethod
    def build(cls, context: MechanismContext) -> "VirtioMemController":
        return cls(context.hypervisor, dry_run=context.dry_run)

    def __init__(self, hypervisor: HypervisorInterface, *, dry_run: bool = False) -> None:
        self.hypervisor = hypervisor
        self.dry_run = dry_run
        self.refusals = RefusalLog(log, self.name)
        #: By guest UUID: what we last asked its device for (KiB), and the
        #: ``virtio_mem_requested`` its sample said then.  The sample catches
        #: up once the definition is read again; until then the same request
        #: is not sent twice.  A change by someone else shows in the sample.
        self.sent: dict[str, tuple[int, int | None]] = {}
        #: Requests sent to the hypervisor (the policies' and by hand).
        self.operations = 0

    # -- the request --------------------------------------------------------

    def check(self, control: str, value: Any) -> int:
        """A request as whole KiB; InvalidArgument unless a non-negative size."""
        if control != VIRTIO_MEM_REQUESTED:
            raise InvalidArgument(f"the VirtioMem mechanism has no control {control!r}")
        kib = _as_kib(value)
        if kib is None:
            raise InvalidArgument(f"a virtio-mem request must be a non-negative number "
                                  f"of KiB, got {value!r}")
        return kib

    @staticmethod
    def fit(value: Any, sample: Mapping[str, Any]) -> int:
        """``value`` rounded to the device's block size; InvalidArgument with
        the reason when the guest has no device or it lies outside 0..max."""
        kib = _as_kib(value)
        if kib is None:
            raise InvalidArgument(f"not a non-negative number of KiB: {value!r}")
        high = _as_kib(sample.get("virtio_mem_max"))
        block = _as_kib(sample.get("virtio_mem_block"))
        if high is None or not block:
            raise InvalidArgument("the guest has no virtio-mem device")
        if kib > high:
            raise InvalidArgument(f"{kib} KiB is above the device's size, {high} KiB "
                                  f"(range 0..{high} KiB)")
        # To the nearest block: the device plugs nothing smaller, and a
        # multiple of the block size is what libvirt accepts.
        return min(high, (kib + block // 2) // block * block)

    async def act(self, decision: Decision) -> dict[str, int]:
        names = decision.guest_names
        applied: dict[str, int] = {}
        self.refusals.forget(set(decision.guest_samples))
        for uuid, controls in decision.guest_controls.items():
            if VIRTIO_MEM_REQUESTED not in controls:
                continue
            name = names.get(uuid)
            requested = controls[VIRTIO_MEM_REQUESTED]
            try:
                kib = self.fit(requested, decision.guest_samples.get(uuid) or {})
            except InvalidArgument as exc:
                self.refusals.refused(uuid, name, VIRTIO_MEM_REQUESTED, str(exc), requested)
                continue
            seen = _as_kib(decision.guest_samples[uuid].get(VIRTIO_MEM_REQUESTED))
            if kib == seen or self.sent.get(uuid) == (kib, seen):
                continue
            try:
                await self._send(uuid, name, kib, seen)
            except HypervisorUnsupported as exc:
                self.refusals.refused(uuid, name, VIRTIO_MEM_REQUESTED, str(exc), kib)
                continue
            except HypervisorError as exc:
                # The message only: the exception holds libvirt's objects.
                log.warning("Guest %s: could not ask virtio-mem for %d KiB: %s",
                            _who(uuid, name), kib, str(exc), extra=guest_fields(uuid, name))
                continue
            self.refusals.accepted(uuid, VIRTIO_MEM_REQUESTED)
            applied[uuid] = kib
            if len(applied) % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
        return applied

    # -- by hand --------------------------------------------------------------

    async def set_requested(self, uuid: str, kib: int, sample: Mapping[str, Any],
                            name: str | None = None) -> int:
        """Ask one guest's device for ``kib`` KiB, as an administrator did;
        returns the request sent (rounded to the block size).

        InvalidArgument when the guest has no device or ``kib`` lies outside
        0..``virtio_mem_max``; HypervisorError from the hypervisor propagates.
        Sent even when it equals the last request: asking again is harmless,
        and the caller asked.
        """
        target = self.fit(kib, sample)
        await self._send(uuid, name, target, _as_kib(sample.get(VIRTIO_MEM_REQUESTED)))
        return target

    # -- the one writer ---------------------------------------------------------

    async def _send(self, uuid: str, name: str | None, kib: int, seen: int | None) -> None:
        about = guest_fields(uuid, name)
        if self.dry_run:
            log.info("Dry run: would ask virtio-mem of guest %s for %d KiB",
                     _who(uuid, name), kib, extra=about)
            return
        await self.hypervisor.set_virtio_mem_requested(uuid, kib)
        self.sent[uuid] = (kib, seen)
        self.operations += 1
        log.info("Asked virtio-mem of guest %s for %d KiB (was %s KiB)", _who(uuid, name), kib,
                 seen, extra=about)


def _who(uuid: str, name: str | None) -> str:
    return f"{name} ({uuid})" if name else uuid
