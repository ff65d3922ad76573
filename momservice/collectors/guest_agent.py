"""GuestQemuAgent: a guest's memory from its own /proc, read by its QEMU guest agent.

For guests whose balloon driver reports nothing (no driver, no statistics
queue, a driver that stopped answering), the guest's ``/proc/meminfo`` and
``/proc/vmstat`` are read through ``qemu-guest-agent``
(:mod:`momservice.hypervisor.libvirt_agent` does the reading) and turned
here into the same fields, with the same meanings and units, as the
balloon's statistics (``GuestMemory``), so that a policy cannot tell the
source apart:

=================  =======================================================
``mem_available``  ``MemTotal`` (the balloon's "available": total memory)
``mem_unused``     ``MemFree``
``mem_usable``     ``MemAvailable`` (kernels since 3.14)
``disk_caches``    ``Buffers + Cached + SwapCached`` (the kernel's file pages)
``swap_in/out``    ``pswpin``/``pswpout`` x the page size: KiB, cumulative
``major_fault``    ``pgmajfault``
``minor_fault``    ``pgfault`` (as the balloon: all faults, major included)
``swap_total``     ``SwapTotal``
``swap_usage``     ``SwapTotal - SwapFree``
``stats_age``      seconds since the agent read the files
=================  =======================================================

MoM's collector of this name reported ``swap_in``/``swap_out`` in pages
since its previous collection, unlike its own balloon collector; here both
sources mean the same (KiB, cumulative), as ``fields.py`` documents them.
MoM's ``mem_free`` guest field has no row in mom's guest catalogue and is
not reported.
"""

from __future__ import annotations

from typing import Any

from .base import GuestStatistics
from .errors import CollectionError
from .guest import GUEST_MEMORY
from .meminfo import parse_meminfo, parse_vmstat

#: The guest's page size in KiB (x86-64; /proc/vmstat counts pages).
PAGE_KIB = 4

#: The same fields as the balloon's statistics: either source fills them
#: (see :mod:`momservice.hypervisor.libvirt` for which one wins).
GUEST_QEMU_AGENT = GuestStatistics("GuestQemuAgent", GUEST_MEMORY.fields)

# Lines without which the figures would be meaningless.
_MEMINFO_REQUIRED = ("MemTotal", "MemFree", "SwapTotal", "SwapFree")
_VMSTAT_REQUIRED = ("pgfault", "pgmajfault", "pswpin", "pswpout")


def agent_fields(meminfo_text: str, vmstat_text: str) -> dict[str, Any]:
    """The guest's fields from the text of its ``/proc/meminfo`` and
    ``/proc/vmstat``; CollectionError when either lacks a needed line."""
    meminfo = parse_meminfo(meminfo_text)
    vmstat = parse_vmstat(vmstat_text)
    missing = ([k for k in _MEMINFO_REQUIRED if k not in meminfo]
               + [k for k in _VMSTAT_REQUIRED if k not in vmstat])
    if missing:
        raise CollectionError("the guest's /proc/meminfo or /proc/vmstat lacks "
                              + ", ".join(missing))
    fields: dict[str, Any] = {
        "mem_available": meminfo["MemTotal"],
        "mem_unused": meminfo["MemFree"],
        "swap_total": meminfo["SwapTotal"],
        "swap_usage": meminfo["SwapTotal"] - meminfo["SwapFree"],
        "swap_in": vmstat["pswpin"] * PAGE_KIB,
        "swap_out": vmstat["pswpout"] * PAGE_KIB,
        "major_fault": vmstat["pgmajfault"],
        "minor_fault": vmstat["pgfault"],
    }
    if "MemAvailable" in meminfo:
        fields["mem_usable"] = meminfo["MemAvailable"]
    if "Buffers" in meminfo and "Cached" in meminfo:
        fields["disk_caches"] = (meminfo["Buffers"] + meminfo["Cached"]
                                 + meminfo.get("SwapCached", 0))
    return fields
