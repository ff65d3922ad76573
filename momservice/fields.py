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

# -- units -------------------------------------------------------------------
# What a number of each statistic means, for whoever converts or labels it
# (the metrics file, a chart).  Sizes are KiB, as in MoM.

KIB = "KiB"
PAGES = "pages"                     # a number of memory pages
PERCENT = "percent"                 # 0..100
SECONDS = "seconds"
MILLISECONDS = "milliseconds"
COUNT = "count"                     # a number of things (CPUs, scans, faults)
SETTING = "setting"                 # a knob's value (KSM's run mode, a flag)
PAGES_PER_SAMPLE = "pages since the previous sample"

#: The unit of every host statistic.
HOST_FIELD_UNITS: dict[str, str] = {
    "mem_available": KIB, "mem_free": KIB, "mem_unused": KIB, "anon_pages": KIB,
    "swap_total": KIB, "swap_usage": KIB,
    "swap_in": PAGES_PER_SAMPLE, "swap_out": PAGES_PER_SAMPLE,
    "cpu_count": COUNT,
    "ksm_run": SETTING, "ksm_pages_to_scan": PAGES, "ksm_sleep_millisecs": MILLISECONDS,
    "ksm_merge_across_nodes": SETTING,
    "ksm_pages_shared": PAGES, "ksm_pages_sharing": PAGES, "ksm_pages_unshared": PAGES,
    "ksm_pages_volatile": PAGES, "ksm_full_scans": COUNT,
    "ksm_shareable": KIB, "ksmd_cpu_usage": PERCENT,     # percent of one CPU
    "mem_pressure_some": PERCENT, "mem_pressure_full": PERCENT,
}

#: The unit of every guest statistic (swap_in/swap_out: KiB since the guest booted).
GUEST_FIELD_UNITS: dict[str, str] = {
    "balloon_cur": KIB, "balloon_max": KIB, "balloon_min": KIB,
    "mem_available": KIB, "mem_unused": KIB, "mem_usable": KIB, "disk_caches": KIB,
    "swap_total": KIB, "swap_usage": KIB, "swap_in": KIB, "swap_out": KIB,
    "major_fault": COUNT, "minor_fault": COUNT,
    "rss": KIB, "host_major_faults": COUNT, "host_minor_faults": COUNT,
    "stats_age": SECONDS,
}

#: Statistics that only grow while their source lives (totals since the
#: guest, its QEMU process or ksmd started), by kind of entity.
CUMULATIVE_FIELDS: dict[str, frozenset[str]] = {
    "host": frozenset({"ksm_full_scans"}),
    "guest": frozenset({"swap_in", "swap_out", "major_fault", "minor_fault",
                        "host_major_faults", "host_minor_faults"}),
}
