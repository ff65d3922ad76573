"""Block I/O limits of guest disks (MoM's IoTune): applies what the policies set.

A policy sets limits through the disks of ``guest.io_tune``
(``(tune.setTotalBytesSec x)``, see ``policy/iotune_value.py``); the
evaluation hands them over as the guest's ``io_tune`` control, one dict per
disk.  This mechanism sends a disk's limits only where they differ from
what the disk has (``io_tune_current``), through the hypervisor's
``set_io_tune`` (libvirt's setBlockIoTune on the live domain).

libvirt sets the limits of a group together (the three byte limits, the
three operation limits): given ``total_bytes_sec`` alone, it would make the
read and write byte limits 0.  The hypervisor layer keeps the others of a
group as the disk has them (``hypervisor/libvirt_iotune.py``), so only the
limits that changed are sent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidArgument, NotFound
from ..hypervisor.base import HypervisorError, HypervisorInterface, HypervisorUnsupported
from ..journal_fields import guest_fields
from ..policy.iotune_value import IO_LIMIT_KEYS, IO_TUNE, IO_TUNE_CURRENT
from .base import Decision, Mechanism, MechanismContext
from .refusals import RefusalLog

log = logging.getLogger(__name__)

#: QEMU's largest throttling limit (THROTTLE_VALUE_MAX): bigger ones are refused.
MAX_LIMIT = 10 ** 15


def limit_value(value: Any) -> int | None:
    """A policy's or a caller's number as a limit (whole, 0..MAX_LIMIT), None if unusable."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    value = int(value)
    return value if 0 <= value <= MAX_LIMIT else None


def current_limits(sample: Mapping[str, Any]) -> dict[str, dict[str, int]] | None:
    """Each disk's current limits by target name, from a sample; None when
    the sample has no disks (the collector is not configured)."""
    disks = sample.get(IO_TUNE_CURRENT)
    if not isinstance(disks, list):
        return None
    found = {}
    for disk in disks:
        found[disk.name] = dict(disk.ioTune.values)
        if disk.path:
            found.setdefault(disk.path, found[disk.name])
    return found


def _changed(wanted: Mapping[str, int], current: Mapping[str, int]) -> dict[str, int]:
    """The limits of ``wanted`` that differ from ``current``."""
    return {k: v for k, v in wanted.items() if current.get(k, 0) != v}


class IoTuneController(Mechanism):
    """Applies the disk limits the policies set, where they changed; refusals
    (a value out of range, a disk the guest lacks, libvirt's no) are logged
    once per guest and disk until the reason changes."""

    name = "IoTune"
    entity = "guest"
    controls = frozenset({IO_TUNE})
    needs_hypervisor = True

    @classmethod
    def build(cls, context: MechanismContext) -> "IoTuneController":
        return cls(context.hypervisor, dry_run=context.dry_run)

    def __init__(self, hypervisor: HypervisorInterface, *, dry_run: bool = False) -> None:
        self.hypervisor = hypervisor
        self.dry_run = dry_run
        self.refusals = RefusalLog(log, self.name)
        #: Limits sent, and the disk's limits then, by (guest, disk): a
        #: request made again before libvirt's tunable event has refreshed
        #: the sample is not sent twice.
        self._sent: dict[tuple[str, str], tuple[dict[str, int], dict[str, int]]] = {}

    # -- checks ----------------------------------------------------------------

    def check(self, control: str, value: Any) -> list[dict[str, Any]]:
        """The ``io_tune`` control as applied: a list of dicts, each with a disk
        ``name`` and limits 0..MAX_LIMIT; InvalidArgument otherwise."""
        if control != IO_TUNE:
            raise InvalidArgument(f"the IoTune mechanism has no control {control!r}")
        if not isinstance(value, list):
            raise InvalidArgument(f"io_tune must be a list of disks, got {value!r}")
        checked = []
        for item in value:
            if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
                raise InvalidArgument(f"an io_tune item must name its disk, got {item!r}")
            checked.append({"name": item["name"], **self.check_limits(item, ignore=("name", "path"))})
        return checked

    @staticmethod
    def check_limits(limits: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> dict[str, int]:
        """Limits by name, each a whole number 0..MAX_LIMIT; InvalidArgument
        for an unknown name or a bad value.  nil (None) values are left out."""
        checked: dict[str, int] = {}
        for key, raw in limits.items():
            if key in ignore or raw is None:
                continue
            if key not in IO_LIMIT_KEYS:
                raise InvalidArgument(f"unknown I/O limit {key!r}; known: "
                                      f"{', '.join(IO_LIMIT_KEYS)}")
            value = limit_value(raw)
            if value is None:
                raise InvalidArgument(f"I/O limit {key} must be a whole number from 0 "
                                      f"(unlimited) to {MAX_LIMIT}, got {raw!r}")
            checked[key] = value
        return checked

    # -- the policies' limits ----------------------------------------------------

    async def act(self, decision: Decision) -> dict[str, list[dict[str, Any]]]:
        """Apply each guest's ``io_tune`` control; returns, per guest, the disks
        whose limits were sent (or would have been, in a dry run) with those limits."""
        applied: dict[str, list[dict[str, Any]]] = {}
        # Guests without controls now (gone, or their policy item failed):
        # what was said and sent about them is news again when they return.
        present = set(decision.guest_samples)
        self.refusals.forget(present)
        for key in [k for k in self._sent if k[0] not in present]:
            del self._sent[key]
        for uuid, controls in decision.guest_controls.items():
            requests = controls.get(IO_TUNE)
            if requests is None:
                continue
            name = decision.guest_names.get(uuid)
            current = current_limits(decision.guest_samples.get(uuid, {}))
            if not isinstance(requests, list):
                self.refusals.refused(uuid, name, IO_TUNE, "not a list of disks", requests)
                continue
            for request in requests:
                sent = await self._apply_disk(uuid, name, request, current)
                if sent:
                    applied.setdefault(uuid, []).append(sent)
        return applied

    async def _apply_disk(self, uuid: str, name: str | None, request: Any,
                          current: dict[str, dict[str, int]] | None) -> dict[str, Any] | None:
        disk = request.get("name") if isinstance(request, Mapping) else None
        if not isinstance(disk, str):
            self.refusals.refused(uuid, name, IO_TUNE, "an item names no disk", request)
            return None
        control = f"{IO_TUNE} {disk}"
        wanted: dict[str, int] = {}
        for key in IO_LIMIT_KEYS:
            if request.get(key) is None:
                continue
            value = limit_value(request[key])
            if value is None:
                self.refusals.refused(uuid, name, control, f"{key} must be a whole number "
                                      f"from 0 (unlimited) to {MAX_LIMIT}", request[key])
                return None
            wanted[key] = value
        has = (current or {}).get(disk)
        if has is None:
            self.refusals.refused(uuid, name, control, "the guest has no such disk "
                                  "(or its disks are not collected: GuestIoTune)")
            return None
        limits = _changed(wanted, has)
        if not limits:
            return None
        last = self._sent.get((uuid, disk))
        if last is not None and last[0] == has and \
                all(last[1].get(k) == v for k, v in limits.items()):
            return None  # sent already; the disk's new limits are not in the sample yet
        try:
            await self._send(uuid, name, disk, limits, has)
        except HypervisorUnsupported as exc:
            self.refusals.refused(uuid, name, control, f"no block I/O tuning here: {exc}")
            return None
        except HypervisorError as exc:
            self.refusals.refused(uuid, name, control, str(exc), limits)
            return None
        self.refusals.accepted(uuid, control)
        self._sent[(uuid, disk)] = (dict(has), dict(limits))
        return {"name": disk, **limits}

    # -- by hand -----------------------------------------------------------------

    async def set_limits(self, uuid: str, device: str, limits: Mapping[str, Any],
                         sample: Mapping[str, Any], name: str | None = None) -> dict[str, int]:
        """Set limits of one disk (target or source) by hand; returns the limits
        sent (the others stay as they are).

        InvalidArgument for an unknown limit or a bad value, NotFound for a
        disk the guest does not have (when its disks are collected);
        HypervisorError (Failed) when libvirt refuses.
        """
        checked = self.check_limits(limits)
        if not checked:
            raise InvalidArgument("no I/O limit given; known: " + ", ".join(IO_LIMIT_KEYS))
        disks = current_limits(sample)
        if disks is not None and device not in disks:
            raise NotFound(f"guest {name or uuid} has no disk {device!r} "
                           f"(it has {', '.join(sorted(disks)) or 'none'})")
        has = disks[device] if disks is not None else {}
        # All of them, even those the sample says the disk has: it may be a
        # collection behind, and the administrator asked.
        await self._send(uuid, name, device, checked, has)
        return checked

    # -- the one writer ------------------------------------------------------------

    async def _send(self, uuid: str, name: str | None, disk: str, limits: dict[str, int],
                    has: Mapping[str, int]) -> None:
        who = f"{name} ({uuid})" if name else uuid
        shown = ", ".join(f"{k}={v}" for k, v in limits.items())
        was = ", ".join(f"{k}={has.get(k, 0)}" for k in limits)
        if self.dry_run:
            log.info("Dry run: would set I/O limits of guest %s disk %s: %s (now %s)",
                     who, disk, shown, was, extra=guest_fields(uuid, name))
            return
        log.debug("Sending I/O limits of guest %s disk %s: %s", who, disk, shown,
                  extra=guest_fields(uuid, name))
        await self.hypervisor.set_io_tune(uuid, disk, limits)
        log.info("Set I/O limits of guest %s disk %s: %s (was %s)", who, disk, shown, was,
                 extra=guest_fields(uuid, name))
