"""The interface between the engine and a hypervisor."""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Protocol

from ..errors import Failed

#: The field in which a reader of a guest's statistics gives the time (epoch
#: seconds) its figures were read; the hypervisor interface makes it the
#: sample's ``stats_age``.
READ_TIME_FIELD = "_last_update"

log = logging.getLogger(__name__)


class HypervisorError(Failed):
    """The hypervisor refused or could not be reached."""


class HypervisorUnsupported(HypervisorError):
    """This hypervisor, or this guest, does not have the mechanism asked for.

    Mechanisms treat it as "absent for this guest", never as a failure that
    stops the others.
    """


@dataclass(slots=True)
class GuestInfo:
    """What stays fixed about a running guest between samples."""

    uuid: str
    name: str
    pid: int = 0          # the qemu process, 0 when unknown
    balloon_min: int = 0  # KiB: <memtune><min_guarantee>, 0 when not set
    #: Statistics read from the guest's definition (devices, metadata), kept
    #: until it changes; merged into every sample of the guest.
    defined: dict[str, Any] = field(default_factory=dict)


class HypervisorListener(Protocol):
    """What the engine hears from a hypervisor interface, on the event loop."""

    def guest_added(self, info: GuestInfo) -> None: ...

    def guest_removed(self, uuid: str) -> None: ...

    def connection_changed(self, connected: bool) -> None: ...

    def guest_changed(self, info: GuestInfo) -> None:
        """``info.defined`` was read again after one of its events (a
        virtio-mem device's new size, ...): its fields need not wait for
        the next collection."""


class HypervisorInterface(abc.ABC):
    """A source of guests and guest statistics, and the one way each mechanism
    changes a guest (a balloon's size, ...).

    Implementations report guests appearing and disappearing to the listener
    as soon as they know, keep running while the hypervisor is away
    (reconnecting by themselves) and never raise from ``collect``.  A
    mechanism beyond the balloon adds its one operation here with a default
    that raises HypervisorUnsupported, so a hypervisor that lacks it (the
    simulator, an old driver) leaves the mechanism absent for its guests.
    """

    uri: str
    #: Every sample ``collect`` returns is a new dict that nothing else holds
    #: or changes afterwards: the engine may keep it as it is.
    new_samples: bool = False
    #: Set by ``start``: who hears about guests and the connection.
    _listener: HypervisorListener | None = None

    def _notify(self, method: str, *args: Any) -> None:
        """Tell the listener; a bug of the listener is logged, never raised here."""
        listener = self._listener
        if listener is None:
            return
        try:
            getattr(listener, method)(*args)
        except Exception:  # a listener bug must not stop the hypervisor interface
            log.exception("hypervisor listener failed in %s", method)

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """The connection is up."""

    @abc.abstractmethod
    async def start(self, listener: HypervisorListener) -> None:
        """Connect (or start trying to), subscribe to events, report running guests."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect and stop every background task."""

    @abc.abstractmethod
    def guests(self) -> dict[str, GuestInfo]:
        """Running guests by UUID, as last known."""

    @abc.abstractmethod
    async def resync(self) -> None:
        """List the running guests again and report any change to the listener."""

    @abc.abstractmethod
    async def collect(self) -> dict[str, dict[str, Any]]:
        """One sample per running guest, by UUID, with the policy's field names (KiB).

        A guest whose statistics are not available (yet) gets the fields
        that are; the engine leaves incomplete guests out of ``Guests``.
        Returns {} while disconnected.
        """

    def leave_out(self, fields: frozenset[str]) -> bool:
        """Make ``collect`` leave ``fields`` out of its samples (those of the
        guest collectors not configured), before it is first called.  False
        (this default) when the interface does not: the caller then drops
        them from each sample itself."""
        return False

    @abc.abstractmethod
    async def set_balloon_target(self, uuid: str, kib: int) -> None:
        """Resize the guest's balloon to ``kib``; HypervisorError when refused."""

    async def set_io_tune(self, uuid: str, device: str, limits: dict[str, int]) -> None:
        """Apply block I/O ``limits`` (``total_bytes_sec`` ... ``write_iops_sec``,
        0 unlimited) to disk ``device`` (target or source) of the running guest;
        HypervisorUnsupported without block I/O tuning, HypervisorError when refused."""
        raise HypervisorUnsupported(f"{type(self).__name__} has no block I/O tuning")

    async def set_mem_tune(self, uuid: str, limits: Mapping[str, int]) -> None:
        """Set cgroup memory limits on the guest's QEMU process (MemTune):
        ``limits`` by policy name (``mem_soft_limit``, ``mem_hard_limit``,
        ``mem_swap_hard_limit``), KiB, 0 = unlimited; the others stay.
        HypervisorUnsupported where the hypervisor or the guest has none."""
        raise HypervisorUnsupported(f"{type(self).__name__} has no memory tunables")

    async def set_virtio_mem_requested(self, uuid: str, kib: int) -> None:
        """Ask the guest's virtio-mem device for ``kib`` KiB; HypervisorError
        when refused, HypervisorUnsupported without such a device."""
        raise HypervisorUnsupported(f"{type(self).__name__} has no virtio-mem")

    async def set_cpu_tune(self, uuid: str, *, quota: int | None = None,
                           period: int | None = None) -> None:
        """Set the guest's vCPU bandwidth (microseconds; None leaves one as it
        is); HypervisorUnsupported where this hypervisor has no CPU tuning."""
        raise HypervisorUnsupported(f"{type(self).__name__} has no CPU tuning")
