"""The collectors momd knows, under MoM's names, registered here and nowhere else.

Adding a collector: write its module (a host collector is a
:class:`~.base.HostStatistics`, a guest collector a
:class:`~.base.GuestStatistics`), add it below, and its tests.  Its name
becomes valid in ``[host] collectors`` or ``[guest] collectors``, and its
fields are collected when it is configured.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from .base import GuestStatistics, HostStatistics
from .guest import GUEST_BALLOON, GUEST_MEMORY, GUEST_MEMTUNE, GUEST_QEMU_PROC
from .guest_agent import GUEST_QEMU_AGENT
from .guest_cpu_tune import GUEST_CPU_TUNE_COLLECTOR
from .guest_iotune import GUEST_IO_TUNE, GUEST_IO_TUNE_OPTIONAL
from .host_cpu import HostCpu
from .host_ksm import HostKSM
from .host_memory import HostMemory
from .host_pressure import HostPressure
from .host_time import HostTime
from .virtio_mem import GUEST_VIRTIO_MEM

log = logging.getLogger(__name__)

#: Host collectors by name, in the order a sample is taken.
HOST_COLLECTORS: dict[str, type[HostStatistics]] = {
    kind.name: kind for kind in (HostMemory, HostKSM, HostCpu, HostPressure,
                                 HostTime)}

#: Guest collectors by name.
GUEST_COLLECTORS: dict[str, GuestStatistics] = {
    kind.name: kind for kind in (GUEST_QEMU_PROC, GUEST_MEMORY, GUEST_BALLOON,
                                 GUEST_MEMTUNE, GUEST_QEMU_AGENT, GUEST_VIRTIO_MEM,
                                 GUEST_IO_TUNE, GUEST_IO_TUNE_OPTIONAL,
                                 GUEST_CPU_TUNE_COLLECTOR)}

def implemented(names: Iterable[str], registered: Iterable[str], kind: str) -> list[str]:
    """``names`` that are registered, in order, each once; every other one is
    named in one warning.  Called once per momd, when it is assembled."""
    known = set(registered)
    warned: set[str] = set()
    chosen: list[str] = []
    for name in names:
        if name in known:
            if name not in chosen:
                chosen.append(name)
        elif name not in warned:
            warned.add(name)
            log.warning("%s %s is not implemented by mom: its statistics are not collected",
                        kind, name)
    return chosen


def guest_fields(names: Iterable[str]) -> frozenset[str]:
    """The fields the named guest collectors keep."""
    fields: set[str] = set()
    for name in implemented(names, GUEST_COLLECTORS, "guest collector"):
        fields |= GUEST_COLLECTORS[name].fields
    return frozenset(fields)


def host_fields(names: Iterable[str]) -> frozenset[str]:
    """The fields the named host collectors provide."""
    fields: set[str] = set()
    for name in implemented(names, HOST_COLLECTORS, "host collector"):
        fields |= HOST_COLLECTORS[name].fields
    return frozenset(fields)
