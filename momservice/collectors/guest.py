"""The guest collectors: which fields of the hypervisor's guest samples are kept.

The hypervisor interface samples every guest in one call (libvirt's bulk
statistics); a guest collector names its part of that sample.
"""

from __future__ import annotations

from .base import GuestStatistics

#: The balloon's size and bounds, KiB; what it does by itself (0/1, from
#: its definition: hypervisor/libvirt_balloon_features.py).
GUEST_BALLOON = GuestStatistics("GuestBalloon", frozenset({
    "balloon_cur", "balloon_max", "balloon_min",
    "balloon_autodeflate", "balloon_free_page_reporting"}))

#: What the guest's balloon driver reports of its memory, and how old that is.
GUEST_MEMORY = GuestStatistics("GuestMemory", frozenset({
    "mem_available", "mem_unused", "mem_usable", "disk_caches", "swap_in", "swap_out",
    "swap_total", "swap_usage", "major_fault", "minor_fault", "stats_age"}))

#: The guest's QEMU process on the host: its resident memory and page faults.
GUEST_QEMU_PROC = GuestStatistics("GuestQemuProc", frozenset({
    "rss", "host_major_faults", "host_minor_faults"}))

#: MemTune's cgroup limits on the guest's QEMU process (KiB; absent while
#: unlimited), read from libvirt's live <memtune>.
GUEST_MEMTUNE = GuestStatistics("GuestMemTune", frozenset({
    "mem_soft_limit", "mem_hard_limit", "mem_swap_hard_limit"}))
