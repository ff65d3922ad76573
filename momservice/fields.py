"""The vocabulary of statistics and controls, as policies name them.

These are MoM's names, so MoM policies run unchanged.  Collectors produce
these fields, the policy engine reads them, the D-Bus layer publishes them.
"""

from __future__ import annotations

#: Every statistic a host sample may carry.
HOST_FIELDS: frozenset[str] = frozenset({
    "mem_available", "mem_free", "mem_unused", "anon_pages",
    "swap_total", "swap_usage", "swap_in", "swap_out", "cpu_count",
    "ksm_run", "ksm_pages_to_scan", "ksm_sleep_millisecs",
    "ksm_merge_across_nodes", "ksm_pages_shared", "ksm_pages_sharing",
    "ksm_pages_unshared", "ksm_pages_volatile", "ksm_full_scans",
    "ksm_shareable", "ksmd_cpu_usage",
    "mem_pressure_some", "mem_pressure_full",
})

#: Guest statistics that must all be present for a guest to be in ``Guests``.
GUEST_REQUIRED_FIELDS: frozenset[str] = frozenset({
    "balloon_cur", "balloon_max", "balloon_min", "mem_available",
    "mem_unused", "major_fault", "minor_fault", "swap_in", "swap_out",
})

#: Guest statistics a guest may lack; an absent one reads as nil.
GUEST_OPTIONAL_FIELDS: frozenset[str] = frozenset({
    "swap_total", "swap_usage", "mem_usable", "disk_caches", "rss",
    "host_major_faults", "host_minor_faults", "stats_age",
})

GUEST_FIELDS: frozenset[str] = GUEST_REQUIRED_FIELDS | GUEST_OPTIONAL_FIELDS

#: Fixed properties of a guest, read with ``(guest.Prop "NAME")``.
GUEST_PROPERTIES: tuple[str, ...] = ("name", "uuid", "pid")

#: Controls a policy may request, per kind of entity.
GUEST_CONTROLS: frozenset[str] = frozenset({"balloon_target"})
HOST_CONTROLS: frozenset[str] = frozenset({
    "ksm_run", "ksm_pages_to_scan", "ksm_sleep_millisecs",
    "ksm_merge_across_nodes",
})
