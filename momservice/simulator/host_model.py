"""The simulated host's memory: guests, its own overhead, page cache, swap, PSI.

All sizes KiB.  ``used`` is what the host must hold::

    used = sum of the guests' resident memory + overhead - KSM savings

What fits in RAM is in RAM; the rest is in the host's swap (the host swaps
guest memory blindly once ``used`` exceeds its memory).  The host's page
cache grows into free memory and is the first thing reclaimed, so::

    total = min(used, total) + cache + unused      (while swap has room)

Guest memory that a cgroup limit pushed out (MemTune, see guest_model) is
in the host's swap whether the host is short or not; the host swaps the
rest blindly as above.

The pressure figures (PSI ``avg10``, percent) follow a 10-second moving
average of how much time reclaim and swapping would stall tasks.
"""

from __future__ import annotations

import math

MiB = 1024
PAGE_KIB = 4

#: Share of the swapped guest memory the guests touch again per second.  Assumed.
THRASH_RATE = 0.01
#: Swap traffic (KiB/s) at which some / all tasks would be stalled all the
#: time.  Assumed.
SOME_SWAP_SCALE = 64 * MiB
FULL_SWAP_SCALE = 256 * MiB
#: Page cache reclaim (KiB/s) that alone would stall some task all the time.  Assumed.
SOME_RECLAIM_SCALE = 1024 * MiB
#: PSI's avg10 window (seconds).  Kernel: the avg10 figure of /proc/pressure/memory.
PSI_WINDOW = 10.0
#: How fast the host's page cache grows into free memory (KiB/s).  Assumed.
HOST_IO_RATE = 4 * MiB


class HostModel:
    """The host's memory; ``step`` takes the guests' total and the KSM savings."""

    def __init__(self, *, total_kib: float, overhead_kib: float, swap_kib: float,
                 cache_max_kib: float, cpu_count: int) -> None:
        self.total = float(total_kib)
        self.overhead = float(overhead_kib)
        self.swap_total = float(swap_kib)
        self.cache_max = float(cache_max_kib)
        self.cpu_count = int(cpu_count)
        self.used = self.overhead
        self.swap_usage = 0.0
        self.cache = 0.0
        self.unused = self.total - self.overhead
        #: The part of swap_usage the host swapped by itself (not the limits').
        self.overflow = 0.0
        #: Memory neither RAM nor swap could hold (the OOM killer's share).
        self.oom_kib = 0.0
        # Counters since boot, pages (like pswpin/pswpout in /proc/vmstat).
        self.swap_in_pages = 0.0
        self.swap_out_pages = 0.0
        self.pressure_some = 0.0
        self.pressure_full = 0.0
        #: Seconds some / all tasks were stalled since boot (PSI's ``total``).
        self.stall_some_seconds = 0.0
        self.stall_full_seconds = 0.0

    @property
    def in_ram(self) -> float:
        """The part of ``used`` in RAM."""
        return self.used - self.swap_usage

    def step(self, dt: float, guests_resident_kib: float, ksm_savings_kib: float,
             limited_kib: float = 0.0, limit_swap_in_kib: float = 0.0,
             limit_swap_out_kib: float = 0.0) -> None:
        """Advance by ``dt``.  ``guests_resident_kib`` counts what cgroup
        limits keep in swap too: ``limited_kib`` of it, which moved in and
        out by ``limit_swap_in_kib`` / ``limit_swap_out_kib`` in this step."""
        used = guests_resident_kib + self.overhead - ksm_savings_kib
        room = max(0.0, self.swap_total - limited_kib)
        overflow = min(max(0.0, used - limited_kib - self.total), room)
        self.oom_kib = max(0.0, used - limited_kib - self.total - room)
        swap = limited_kib + overflow
        swap_in, swap_out = limit_swap_in_kib, limit_swap_out_kib
        change = overflow - self.overflow
        if change > 0:
            swap_out += change
        else:
            swap_in -= change
        if overflow > 0:
            thrash = overflow * THRASH_RATE * dt
            swap_in += thrash
            swap_out += thrash
        self.overflow = overflow
        self.swap_in_pages += swap_in / PAGE_KIB
        self.swap_out_pages += swap_out / PAGE_KIB

        in_ram = used - swap
        space = max(0.0, self.total - in_ram)
        cache = min(self.cache + HOST_IO_RATE * dt, self.cache_max, space)
        reclaimed = max(0.0, self.cache - cache)
        self.used, self.swap_usage, self.cache = used, swap, cache
        self.unused = space - cache

        if dt > 0:
            swap_rate = (swap_in + swap_out) / dt
            reclaim_rate = reclaimed / dt
            some = 100.0 * min(1.0, swap_rate / SOME_SWAP_SCALE
                               + reclaim_rate / SOME_RECLAIM_SCALE)
            full = 100.0 * min(1.0, swap_rate / FULL_SWAP_SCALE)
            self.stall_some_seconds += some / 100.0 * dt
            self.stall_full_seconds += full / 100.0 * dt
            keep = math.exp(-dt / PSI_WINDOW)
            self.pressure_some = self.pressure_some * keep + some * (1 - keep)
            self.pressure_full = self.pressure_full * keep + full * (1 - keep)
