"""Resizing guest balloons: the only place mom changes a guest's memory."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidArgument
from ..hypervisor.base import HypervisorError, HypervisorInterface
from ..journal_fields import guest_fields
from .base import Decision, Mechanism, MechanismContext

log = logging.getLogger(__name__)

#: Balloon commands sent before the event loop gets a turn.
_YIELD_EVERY = 10

#: The default balloon floor (KiB): no guest is squeezed below 256 MiB
#: (the ``balloon-floor`` configuration key's default).
DEFAULT_FLOOR_KIB = 262144

#: The one control it consumes, on each guest.
BALLOON_TARGET = "balloon_target"


def _as_kib(value: Any) -> int | None:
    """A policy's number as whole KiB (rounded down), None when not a usable size."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value < 0:
        return None
    return int(value)


def _sample_kib(sample: Mapping[str, Any], field: str) -> int | None:
    """A balloon field of a sample as whole KiB, None when absent or unusable."""
    return _as_kib(sample.get(field))


class BalloonController(Mechanism):
    """Applies balloon targets to running guests through the hypervisor interface.

    Every target the policies ask for is clamped to the guest's allowed
    range, ``[max(balloon_min, floor), balloon_max]`` (``floor`` protects
    guests without a ``<min_guarantee>`` from being starved), rounded down
    to whole KiB and sent only when it differs from the balloon's current
    size.  With ``dry_run`` it decides and logs the same way but sends
    nothing.  Manual targets (``set_target``) are checked against the same
    range and refused, not clamped.
    """

    name = "Balloon"
    entity = "guest"
    controls = frozenset({BALLOON_TARGET})
    needs_hypervisor = True

    @classmethod
    def build(cls, context: MechanismContext) -> "BalloonController":
        floor = (DEFAULT_FLOOR_KIB if context.balloon_floor_kib is None
                 else context.balloon_floor_kib)
        return cls(context.hypervisor, floor_kib=floor, dry_run=context.dry_run)

    def __init__(self, hypervisor: HypervisorInterface, *,
                 floor_kib: int = DEFAULT_FLOOR_KIB, dry_run: bool = False) -> None:
        if isinstance(floor_kib, bool) or not isinstance(floor_kib, int) or floor_kib < 0:
            raise InvalidArgument(f"balloon floor must be a non-negative number of KiB, "
                             f"got {floor_kib!r}")
        self.hypervisor = hypervisor
        self.floor_kib = floor_kib
        self.dry_run = dry_run
        #: Targets sent to the hypervisor (the policies' and by hand), for the metrics.
        self.operations = 0
        #: The last target sent, KiB, by guest UUID (kept after a guest is gone:
        #: one number per guest ever resized).
        self.targets: dict[str, int] = {}

    # -- range ---------------------------------------------------------------

    def limits(self, sample: Mapping[str, Any]) -> tuple[int, int] | None:
        """The guest's allowed target range (low, high) in KiB, None when unknown.

        ``balloon_max`` is required; a missing ``balloon_min`` counts as 0.
        When ``balloon_max`` is below the floor the range shrinks to
        ``balloon_max`` alone: a small guest keeps all its memory.
        """
        high = _sample_kib(sample, "balloon_max")
        if high is None:
            return None
        low = max(_sample_kib(sample, "balloon_min") or 0, self.floor_kib)
        return min(low, high), high

    # -- policy targets --------------------------------------------------------

    def check(self, control: str, value: Any) -> int:
        """A balloon target as whole KiB; InvalidArgument unless a size."""
        if control != BALLOON_TARGET:
            raise InvalidArgument(f"the Balloon mechanism has no control {control!r}")
        kib = _as_kib(value)
        if kib is None:
            raise InvalidArgument(f"a balloon target must be a non-negative number "
                                  f"of KiB, got {value!r}")
        return kib

    async def act(self, decision: Decision) -> dict[str, int]:
        return await self.apply(decision.guest_controls, decision.guest_samples,
                                decision.guest_names)

    async def apply(self, requests: Mapping[str, Mapping[str, Any]],
                    samples: Mapping[str, Mapping[str, Any]],
                    names: Mapping[str, str] | None = None) -> dict[str, int]:
        """Apply the policies' ``balloon_target`` controls, guest by guest.

        ``requests`` holds each guest's controls by UUID, ``samples`` its
        newest sample (``balloon_cur``, ``balloon_min``, ``balloon_max``),
        ``names`` its name for the log.  Returns the target applied (or, in
        a dry run, that would have been) per UUID; guests whose target
        equals the current size, was unusable or was refused are left out.
        One guest's failure never stops the others.
        """
        names = names or {}
        applied: dict[str, int] = {}
        for uuid, controls in requests.items():
            if BALLOON_TARGET not in controls:
                continue
            requested = controls[BALLOON_TARGET]
            kib = _as_kib(requested)
            if kib is None:
                log.warning("Guest %s: ignoring balloon target %r from the policy: "
                            "not a non-negative number of KiB", _guest(uuid, names),
                            requested, extra=guest_fields(uuid, names.get(uuid)))
                continue
            sample = samples.get(uuid)
            limits = self.limits(sample) if sample is not None else None
            if limits is None:
                log.warning("Guest %s: ignoring balloon target %d KiB: no balloon_max "
                            "in its latest sample, so the allowed range is unknown",
                            _guest(uuid, names), kib, extra=guest_fields(uuid, names.get(uuid)))
                continue
            low, high = limits
            target = min(max(kib, low), high)
            current = _sample_kib(sample, "balloon_cur")
            if target == kib and target == current:
                # Most guests of most evaluations: nothing to say or send, so
                # not even the names for the log are made.
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("Guest %s: balloon already at %d KiB, nothing to send",
                              _guest(uuid, names), target,
                              extra=guest_fields(uuid, names.get(uuid)))
                continue
            who = _guest(uuid, names)
            about = guest_fields(uuid, names.get(uuid))
            if target != kib:
                log.info("Guest %s: balloon target %d KiB clamped to %d KiB "
                         "(allowed range %d..%d KiB: balloon_min %s, floor %d, "
                         "balloon_max %d)", who, kib, target, low, high,
                         sample.get("balloon_min"), self.floor_kib, high, extra=about)
            if target == current:
                log.debug("Guest %s: balloon already at %d KiB, nothing to send",
                          who, target, extra=about)
                continue
            try:
                await self._send(uuid, who, target, current, about)
            except HypervisorError as exc:
                # The message, not the exception: a log record may outlive
                # this call, and the exception's traceback holds the
                # hypervisor's connection objects.
                log.warning("Guest %s: could not set balloon to %d KiB: %s",
                            who, target, str(exc), extra=about)
                continue
            applied[uuid] = target
            if len(applied) % _YIELD_EVERY == 0:
                # Hundreds of targets in a row: let the bus answer meanwhile.
                await asyncio.sleep(0)
        return applied

    # -- manual targets ------------------------------------------------------

    async def set_target(self, uuid: str, kib: int, sample: Mapping[str, Any],
                         name: str | None = None) -> int:
        """Set one guest's balloon to a target an administrator asked for.

        Unlike policy targets, a manual target outside the allowed range is
        refused: ``InvalidArgument`` says which range applies.  Returns the
        target (also when already current, in which case nothing is sent,
        and in a dry run).  ``HypervisorError`` from the hypervisor
        propagates, for the caller to report.
        """
        who = _guest(uuid, {uuid: name} if name else {})
        about = guest_fields(uuid, name)
        target = _as_kib(kib)
        if target is None:
            raise InvalidArgument(f"balloon target for guest {who} must be a "
                             f"non-negative number of KiB, got {kib!r}")
        limits = self.limits(sample)
        if limits is None:
            raise InvalidArgument(f"guest {who} has no balloon_max in its latest sample: "
                             f"its allowed balloon range is unknown")
        low, high = limits
        if not low <= target <= high:
            raise InvalidArgument(
                f"balloon target {target} KiB for guest {who} is outside its "
                f"allowed range {low}..{high} KiB (balloon_min "
                f"{sample.get('balloon_min')}, floor {self.floor_kib}, "
                f"balloon_max {high})")
        current = _sample_kib(sample, "balloon_cur")
        if target == current:
            log.info("Guest %s: balloon already at %d KiB, nothing to send", who, target,
                     extra=about)
            return target
        await self._send(uuid, who, target, current, about)
        return target

    # -- the one writer ------------------------------------------------------

    async def _send(self, uuid: str, who: str, target: int, current: int | None,
                    about: dict[str, str]) -> None:
        was = f"{current} KiB" if current is not None else "unknown"
        if self.dry_run:
            log.info("Dry run: would set balloon of guest %s to %d KiB (now %s)",
                     who, target, was, extra=about)
            return
        await self.hypervisor.set_balloon_target(uuid, target)
        self.operations += 1
        self.targets[uuid] = target
        log.info("Set balloon of guest %s to %d KiB (was %s)", who, target, was, extra=about)


def _guest(uuid: str, names: Mapping[str, str]) -> str:
    name = names.get(uuid)
    return f"{name} ({uuid})" if name else uuid
