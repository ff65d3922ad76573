"""One simulated guest: its memory, its balloon and what its driver reports.

All sizes are KiB (floats inside, whole numbers in the statistics).  The
guest's memory, as the balloon leaves it (``balloon_cur``), is always::

    balloon_cur = reserved + kernel + anon + cache + free

``reserved`` is firmware and boot memory outside MemTotal, ``kernel`` the
guest kernel's own use, ``anon`` the resident part of the working set,
``cache`` the page cache and ``free`` the rest (at least the watermark the
guest kernel keeps free, unless the balloon leaves even less).  What the
working set does not fit is in the guest's swap.

On the host the guest holds ``touched`` KiB: every page it ever used and
still has (freed pages stay resident on the host until the balloon takes
them), plus QEMU's own overhead.

A cgroup memory limit on the QEMU process (MemTune: soft or hard) caps
what of it stays in host RAM: above the limit the host kernel reclaims
QEMU's clean file pages first (dropped: its binary and libraries, read
again when needed), then moves guest memory to the host's swap
(``limit_swapped``), coldest first: the pages the guest freed and no
longer uses stay there; what it uses faults back in as it touches it
(while there is room under the limit, else another page goes out).  Soft limits are modelled as cgroup v2's
``memory.high`` (what libvirt's soft_limit is there): enforced like the
hard limit, except that memory that cannot be reclaimed (no swap left)
stays above a soft limit, while above a hard one the kernel would
OOM-kill QEMU (counted in ``limit_oom_kib``).
"""

from __future__ import annotations

from typing import Any

from .scenario import GuestSpec
from .workload import Workload

MiB = 1024
PAGE_KIB = 4

#: Share of the swapped-out working set the load touches again per second
#: (each such page is swapped in, and another one out): thrashing.  Assumed.
THRASH_RATE = 0.02
#: Share of the working set whose pages are faulted in anew per second
#: (allocations, short-lived memory): minor faults.  Assumed.
CHURN_RATE = 0.002
#: Firmware and boot memory outside MemTotal: 1 % of the guest, at most
#: 64 MiB.  Assumed.
RESERVED_SHARE, RESERVED_MAX_KIB = 0.01, 64 * MiB
#: The guest kernel's own memory (slab, page tables): 3 %, at least 32 MiB.  Assumed.
KERNEL_SHARE, KERNEL_MIN_KIB = 0.03, 32 * MiB
#: Memory the guest kernel keeps free (its min_free_kbytes and watermarks):
#: 1 %, at least 8 MiB.  Assumed, of the order of the kernel's rule
#: (min_free_kbytes ~ sqrt(16 x RAM in KiB): 5.6 MiB at 2 GiB, 11 MiB at 8 GiB).
WATERMARK_SHARE, WATERMARK_MIN_KIB = 0.01, 8 * MiB
#: QEMU's file-backed resident pages (binary, libraries): clean, dropped
#: first by a limit.  Measured: 23 MiB (RssFile of QEMU 7.2 running a
#: 256 MiB TCG guest, tests/e2e/test_memtune.py).
QEMU_FILE_KIB = 23 * MiB
#: Share of the guest's memory in use that a limit pushed to host swap
#: which the guest touches again per second (each touch a host major
#: fault).  Assumed, as the host model's THRASH_RATE.
LIMIT_TOUCH_RATE = 0.01


class GuestModel:
    """A guest's memory and balloon, advanced by ``step``."""

    def __init__(self, spec: GuestSpec, uuid: str, workload: Workload, *,
                 balloon_rate_kib_s: float, swap_rate_kib_s: float,
                 deflate_rate_kib_s: float | None = None,
                 stats_period: float, qemu_overhead_kib: float, now: float = 0.0) -> None:
        self.spec = spec
        self.uuid = uuid
        self.name = spec.name
        self.workload = workload
        self.max_kib = spec.memory_mib * MiB
        self.min_guarantee_kib = spec.min_guarantee_mib * MiB
        self.reserved = min(RESERVED_MAX_KIB, RESERVED_SHARE * self.max_kib)
        self.kernel = max(KERNEL_MIN_KIB, KERNEL_SHARE * self.max_kib)
        self.watermark = max(WATERMARK_MIN_KIB, WATERMARK_SHARE * self.max_kib)
        self.swap_total = spec.swap_mib * MiB
        self.cache_max = spec.cache_share * self.max_kib
        self.io_rate = spec.io_mib_s * MiB
        self.shareable = spec.shareable
        self.balloon_rate = balloon_rate_kib_s
        self.deflate_rate = (balloon_rate_kib_s if deflate_rate_kib_s is None
                             else deflate_rate_kib_s)
        self.swap_rate = swap_rate_kib_s
        self.stats_period = stats_period
        self.qemu_overhead = qemu_overhead_kib

        self.balloon_cur = float(self.max_kib)
        self.balloon_target = float(self.max_kib)
        # virtio-mem: balloon_cur is then the guest's size, its boot memory
        # plus what the device has plugged (the balloon itself stays deflated).
        self.virtio_mem_kib = spec.virtio_mem_mib * MiB
        self.boot_kib = self.max_kib - self.virtio_mem_kib
        self.working_set = workload.working_set(now)
        room = self._room(self.balloon_cur)
        self.anon = min(self.working_set, room)
        self.swapped = min(self.swap_total, self.working_set - self.anon)
        self.cache = min(spec.initial_cache_share * self.max_kib, self.cache_max,
                         room - self.anon)
        self.touched = self.in_use
        # Counters since boot, as the balloon driver reports them.
        self.swap_in_kib = 0.0
        self.swap_out_kib = 0.0
        self.major_faults = 0.0
        self.minor_faults = 0.0
        #: Working set the guest could not hold even in swap (its OOM killer's share).
        self.oom_kib = 0.0
        self._reported: dict[str, int] = {}
        self._last_update = now
        #: Whether the balloon driver answers (spec.balloon_responds).
        self.responds = spec.balloon_responds
        # MemTune's limits (KiB, 0 = unlimited) and what they reclaimed.
        self.soft_limit = 0.0
        self.hard_limit = 0.0
        self.swap_hard_limit = 0.0
        self.clean_dropped = 0.0     # QEMU file pages dropped by a limit
        self.limit_swapped = 0.0     # guest memory a limit pushed to host swap
        self.limit_oom_kib = 0.0     # above a hard limit with no swap left
        self.host_major_faults = 0.0
        self._refresh(now)

    # -- derived figures -------------------------------------------------------

    @property
    def free(self) -> float:
        return self.balloon_cur - self.reserved - self.kernel - self.anon - self.cache

    @property
    def in_use(self) -> float:
        """Guest memory holding data: everything but the free pages."""
        return self.reserved + self.kernel + self.anon + self.cache

    @property
    def resident(self) -> float:
        """What the guest holds on the host (KiB, in RAM or in host swap):
        touched RAM plus QEMU's overhead, less the clean pages a limit dropped."""
        return self.touched + self.qemu_overhead - self.clean_dropped

    @property
    def resident_ram(self) -> float:
        """The part of ``resident`` in host RAM: less what a limit pushed to swap."""
        return self.resident - self.limit_swapped

    @property
    def limit(self) -> float:
        """The limit in force on host RAM (KiB), 0 when unlimited."""
        limits = [x for x in (self.soft_limit, self.hard_limit) if x > 0]
        return min(limits) if limits else 0.0

    def _room(self, balloon: float) -> float:
        """Memory for the working set and the page cache within ``balloon``."""
        return max(0.0, balloon - self.reserved - self.kernel - self.watermark)

    # -- control ---------------------------------------------------------------

    def set_target(self, kib: float) -> int:
        """Ask the balloon to move to ``kib``, clamped to [0, max]; returns the
        target (a balloon that does not answer keeps the one it had)."""
        if self.responds:
            self.balloon_target = float(min(max(0, int(kib)), self.max_kib))
        return int(self.balloon_target)

    def set_limits(self, limits: dict[str, int]) -> None:
        """Set MemTune's limits by policy name (KiB, 0 = unlimited); the others stay."""
        for name, kib in limits.items():
            setattr(self, name.removeprefix("mem_"), float(max(0, int(kib))))

    def limits(self) -> dict[str, int]:
        """The limits set, by policy name (unlimited ones left out, as libvirt does)."""
        return {f"mem_{name}": int(value) for name, value in (
            ("soft_limit", self.soft_limit), ("hard_limit", self.hard_limit),
            ("swap_hard_limit", self.swap_hard_limit)) if value > 0}

    def reclaim(self, dt: float, swap_room: float) -> tuple[float, float]:
        """The host kernel enforcing the limit for ``dt`` seconds, with
        ``swap_room`` KiB of host swap free; returns (KiB swapped out, KiB
        swapped in) for the host's counters."""
        self.limit_swapped = min(self.limit_swapped, self.touched)
        limit = self.limit
        # The kernel reclaims the coldest pages first: those the guest freed
        # and does not use (touched, not in use) go to swap and stay there;
        # only what a limit took beyond them is touched again, faulted back.
        cold = max(0.0, self.touched - self.in_use)
        hot_swapped = max(0.0, self.limit_swapped - cold)
        touched_again = hot_swapped * LIMIT_TOUCH_RATE * dt
        refault_clean = self.clean_dropped * LIMIT_TOUCH_RATE * dt
        swapped_in = touched_again
        self.limit_swapped -= touched_again
        self.clean_dropped -= refault_clean
        self.host_major_faults += touched_again / PAGE_KIB
        swapped_out = 0.0
        self.limit_oom_kib = 0.0
        if limit > 0:
            excess = self.resident_ram - limit
            if excess > 0:
                # Clean pages first: dropped, nothing to write.
                drop = min(excess, max(0.0, min(QEMU_FILE_KIB, self.qemu_overhead)
                                       - self.clean_dropped))
                self.clean_dropped += drop
                excess -= drop
            if excess > 0:
                room = swap_room + touched_again
                if self.swap_hard_limit > 0:
                    # memory.memsw / memory.swap.max: swap within the difference only.
                    room = min(room, max(0.0, self.swap_hard_limit - limit - self.limit_swapped))
                out = min(excess, max(0.0, room))
                self.limit_swapped += out
                swapped_out += out
                excess -= out
                if excess > 0 and self.hard_limit > 0 and self.hard_limit <= limit:
                    self.limit_oom_kib = excess
        return swapped_out, swapped_in

    def set_virtio_mem_requested(self, kib: float) -> int:
        """Ask the virtio-mem device for ``kib`` (within 0..its size); returns it."""
        requested = min(max(0, int(kib)), self.virtio_mem_kib)
        self.balloon_target = float(self.boot_kib + requested)
        return requested

    # -- time ------------------------------------------------------------------

    def step(self, now: float, dt: float) -> None:
        """Advance by ``dt`` seconds, ending at ``now``."""
        ws = self.workload.working_set(now)
        self.working_set = ws
        old_cur, old_swapped, old_anon = self.balloon_cur, self.swapped, self.anon
        cur = self._move_balloon(dt)

        room = self._room(cur)
        anon = min(ws, room)
        swapped = ws - anon
        if swapped > self.swap_total:
            # Neither RAM nor swap holds it: the guest's OOM killer would act.
            self.oom_kib = swapped - self.swap_total
            swapped = self.swap_total
        else:
            self.oom_kib = 0.0
        grown = swapped - old_swapped
        if grown > 0:
            self.swap_out_kib += grown
            swapped_in = 0.0
        else:
            swapped_in = -grown
        if swapped > 0:
            # The load keeps touching pages it lost to swap.
            thrash = swapped * THRASH_RATE * dt
            swapped_in += thrash
            self.swap_out_kib += thrash
        self.swap_in_kib += swapped_in
        self.major_faults += swapped_in / PAGE_KIB
        self.minor_faults += (max(0.0, anon - old_anon) + ws * CHURN_RATE * dt) / PAGE_KIB

        # Page cache grows into free memory and is the first thing to go.
        cache = min(self.cache + self.io_rate * dt, self.cache_max)
        cache = max(0.0, min(cache, room - anon))

        self.balloon_cur, self.anon, self.swapped, self.cache = cur, anon, swapped, cache
        # The balloon takes freed (touched) pages first and hands them back
        # to the host; pages the guest uses are resident, whatever happened.
        inflated = max(0.0, old_cur - cur)
        self.touched = min(cur, max(self.in_use, self.touched - inflated))
        if now - self._last_update >= self.stats_period - 1e-9:
            self._refresh(now)

    def _move_balloon(self, dt: float) -> float:
        cur, target = self.balloon_cur, self.balloon_target
        if target > cur:
            return min(target, cur + self.deflate_rate * dt)
        step = self.balloon_rate * dt
        if target < cur:
            # Free memory and page cache are given up at the balloon's pace;
            # beyond them the guest must swap its working set out, which is
            # slower and bounded by its free swap space.
            easy = max(0.0, cur - self.reserved - self.kernel - self.watermark - self.anon)
            fast = min(step, easy)
            if self.virtio_mem_kib:
                # The guest unplugs only blocks it can empty: never its working set.
                return max(target, cur - fast)
            slow = min(step - fast, self.swap_rate * dt, self.anon,
                       max(0.0, self.swap_total - self.swapped))
            return max(target, cur - fast - slow)
        return cur

    # -- statistics ------------------------------------------------------------

    def _refresh(self, now: float) -> None:
        """The guest driver's periodic update of its statistics (a driver that
        does not answer reported once, at boot)."""
        if not self.responds and self._reported:
            return
        self._last_update = now
        self._reported = {
            "mem_available": int(self.balloon_cur - self.reserved),
            "mem_unused": int(self.free),
            "mem_usable": int(self.free + self.cache),
            "disk_caches": int(self.cache),
            "swap_in": int(self.swap_in_kib),
            "swap_out": int(self.swap_out_kib),
            "major_fault": int(self.major_faults),
            "minor_fault": int(self.minor_faults),
        }

    def sample(self, now: float, host_ram_share: float = 1.0) -> dict[str, Any]:
        """What libvirt would report: the balloon as it is now, the guest's
        statistics as of its last update (``stats_age`` seconds ago)."""
        sample: dict[str, Any] = dict(self._reported)
        sample["balloon_cur"] = int(self.balloon_cur)
        sample["balloon_max"] = int(self.max_kib)
        sample["rss"] = int(self.resident_ram * host_ram_share)
        sample["stats_age"] = max(0.0, now - self._last_update)
        sample.update(self.limits())
        if self.virtio_mem_kib:
            sample.update(virtio_mem_max=int(self.virtio_mem_kib), virtio_mem_block=2 * MiB,
                          virtio_mem_requested=int(self.balloon_target - self.boot_kib),
                          virtio_mem_current=int(self.balloon_cur - self.boot_kib))
        return sample

    def state(self) -> tuple[float, ...]:
        """Every figure that changes (for comparing runs)."""
        return (self.balloon_cur, self.balloon_target, self.anon, self.swapped, self.cache,
                self.touched, self.swap_in_kib, self.swap_out_kib, self.major_faults,
                self.minor_faults, self.working_set, self.clean_dropped, self.limit_swapped)
