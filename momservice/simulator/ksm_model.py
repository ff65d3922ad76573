"""Simulated KSM: the knobs of /sys/kernel/mm/ksm and the merging they cause.

ksmd scans all guest memory (QEMU marks it mergeable), ``pages_to_scan``
pages every ``sleep_millisecs``, up to what one CPU can compare.  Of each
guest's resident pages a share (its ``shareable`` fraction) has identical
copies elsewhere; each full scan merges about 63% of what is left to merge
(an exponential approach, one full scan being the time constant).  Merged
pages come apart again as soon as the guests stop holding them.  A
distinct merged page is shared by ``k`` guests on average (the number of
guests that have shareable memory, at least 2): ``pages_shared`` counts the
distinct pages, ``pages_sharing`` the copies saved.

``run``: 0 stops ksmd (merged pages stay merged), 1 runs it, 2 stops it
and unmerges everything at once, as the kernel does in the write itself.
``merge_across_nodes`` only changes while nothing is shared.  A write
takes effect at once, as in sysfs (the e2e test saw ``run`` = 1 0.3 s
after setting the ``ksmEnabled`` parameter: the next evaluation, not a
kernel delay).  The scan rate is the kernel's: ``pages_to_scan`` every
``sleep_millisecs`` (defaults 100 and 20, mm/ksm.c; the scenario's
``[ksm]`` table starts from them).  The one-scan time constant is
assumed: the e2e test saw the pages of 3 idle 512 MiB guests merge
(pages_sharing 0 -> 13600, 53 MiB, 3.5 % of them) but did not time it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from ..collectors.ksm import KSM_FILES

PAGE_KIB = 4

#: Pages per second one CPU running ksmd can scan (and compare): 100% CPU.
#: Assumed (about 0.6 GB/s of checksumming and comparing).
MAX_SCAN_RATE = 150_000.0
#: Share of the scanned, not mergeable pages that change too often to track.  Assumed.
VOLATILE_SHARE = 0.005


class KsmModel:
    """KSM's tunables and counters; ``step`` advances its merging."""

    def __init__(self, *, run: int = 0, pages_to_scan: int = 100, sleep_millisecs: int = 20,
                 merge_across_nodes: int = 1) -> None:
        self.run = 0
        self.pages_to_scan = int(pages_to_scan)
        self.sleep_millisecs = int(sleep_millisecs)
        self.merge_across_nodes = int(merge_across_nodes)
        self.merged = 0.0            # pages that are copies of a merged page, or the page
        self.coverage = 0.0          # share of memory scanned since the last unmerge
        self.scans = 0.0             # full scans since boot (fractional)
        self.cpu_seconds = 0.0       # ksmd's CPU time since boot
        self.total_pages = 0.0       # mergeable memory (all guest RAM), pages
        self.target = 0.0            # what could be merged now, pages
        self.sharers = 2
        self.set_run(run)

    # -- knobs -------------------------------------------------------------------

    def set_run(self, value: int) -> None:
        if value not in (0, 1, 2):
            raise ValueError(f"KSM run must be 0, 1 or 2, got {value!r}")
        if value == 2:
            self.merged = 0.0
            self.coverage = 0.0
        self.run = value

    def set_merge_across_nodes(self, value: int) -> bool:
        """Change merge_across_nodes; False (refused, like EBUSY) while pages are shared."""
        if value not in (0, 1):
            raise ValueError(f"KSM merge_across_nodes must be 0 or 1, got {value!r}")
        if value != self.merge_across_nodes and self.pages_shared > 0:
            return False
        self.merge_across_nodes = value
        return True

    @property
    def scan_rate(self) -> float:
        """Pages per second ksmd scans while running."""
        rate = self.pages_to_scan * 1000.0 / max(1, self.sleep_millisecs)
        return min(rate, MAX_SCAN_RATE)

    # -- time --------------------------------------------------------------------

    def step(self, dt: float, guests: Iterable[tuple[float, float]]) -> None:
        """Advance by ``dt``; ``guests``: (resident KiB, shareable share) of each guest."""
        total = target = 0.0
        sharers = 0
        for resident_kib, shareable in guests:
            pages = resident_kib / PAGE_KIB
            total += pages
            target += pages * shareable
            if shareable > 0 and pages > 0:
                sharers += 1
        self.total_pages, self.target, self.sharers = total, target, max(2, sharers)
        if self.run == 1 and total > 0:
            scanned = self.scan_rate * dt
            progress = scanned / total
            if target > self.merged:
                self.merged += (target - self.merged) * (1.0 - math.exp(-progress))
            self.coverage = min(1.0, self.coverage + progress)
            self.scans += progress
            self.cpu_seconds += self.scan_rate / MAX_SCAN_RATE * dt
        # Pages the guests freed or rewrote are no longer merged.
        self.merged = min(self.merged, target)

    # -- counters ------------------------------------------------------------------

    @property
    def pages_shared(self) -> int:
        return int(self.merged / self.sharers)

    @property
    def pages_sharing(self) -> int:
        return int(self.merged) - self.pages_shared

    @property
    def pages_unshared(self) -> int:
        return int(max(0.0, self.total_pages - self.target) * self.coverage)

    @property
    def pages_volatile(self) -> int:
        return int(max(0.0, self.total_pages - self.target) * self.coverage * VOLATILE_SHARE)

    @property
    def full_scans(self) -> int:
        return int(self.scans)

    @property
    def savings_kib(self) -> float:
        """Host memory merging saves: every copy beyond the one kept."""
        return self.pages_sharing * PAGE_KIB

    def files(self) -> dict[str, int]:
        """The values of the sysfs files, by file name."""
        # Tunables and counters alike are attributes of the file's name.
        return {name: int(getattr(self, name)) for name in KSM_FILES}
