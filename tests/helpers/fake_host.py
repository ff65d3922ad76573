"""A fake host: temporary /proc and /sys trees that tests edit between samples."""

from __future__ import annotations

from pathlib import Path

# Formats copied from a real 6.x kernel.
MEMINFO = """\
MemTotal:       24684092 kB
MemFree:        23330544 kB
MemAvailable:   24331732 kB
Buffers:           28748 kB
Cached:          1147868 kB
SwapCached:            0 kB
Active:           204156 kB
Inactive:         987200 kB
Unevictable:       12964 kB
Mlocked:           11932 kB
SwapTotal:       8388604 kB
SwapFree:        8126460 kB
Zswap:                 0 kB
Dirty:               168 kB
Writeback:             0 kB
AnonPages:         27800 kB
Mapped:            15972 kB
Shmem:              8856 kB
VmallocTotal:   34359738367 kB
HugePages_Total:       0
HugePages_Free:        0
Hugepagesize:       2048 kB
DirectMap1G:    25165824 kB
"""


def vmstat(pswpin: int, pswpout: int) -> str:
    return (f"nr_free_pages 831599\nnr_free_pages_blocks 794624\n"
            f"nr_zone_inactive_anon 5516\nnr_free_cma 0\n"
            f"pgpgin 1097332\npgpgout 48708\n"
            f"pswpin {pswpin}\npswpout {pswpout}\npgalloc_dma 0\n")


PSI = ("some avg10=1.25 avg60=0.50 avg300=0.10 total=123456\n"
       "full avg10=0.75 avg60=0.20 avg300=0.05 total=65432\n")

KSM = {"run": "1", "pages_to_scan": "100", "sleep_millisecs": "20",
       "merge_across_nodes": "1", "pages_shared": "1500",
       "pages_sharing": "4200", "pages_unshared": "300",
       "pages_volatile": "12", "full_scans": "7",
       # Files the collector does not report must not disturb it.
       "advisor_mode": "[none] scan-time", "use_zero_pages": "0"}

PROC_STAT = ("cpu  2034 0 1825 45190 181 0 32 5 0 0\n"
             "cpu0 870 0 654 23115 4 0 3 1 0 0\n"
             "cpu1 1163 0 1171 22075 177 0 28 3 0 0\n"
             "cpu2 1163 0 1171 22075 177 0 28 3 0 0\n"
             "intr 148466 0 0 0\nctxt 356887\nbtime 1700000000\n")

KTHREAD_FLAGS = 2097216  # ksmd's real flags: PF_KTHREAD | PF_NOFREEZE


def pid_stat(pid: int, comm: str, utime: int, stime: int,
             flags: int = 4194304) -> str:
    """A /proc/PID/stat line in the kernel's layout."""
    return (f"{pid} ({comm}) S 2 0 0 0 -1 {flags} 0 0 0 0 {utime} {stime} "
            f"0 0 25 5 1 0 26 0 0 18446744073709551615 0 0 0 0 0 0 0 "
            f"2147483647 0 1 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n")


def status(name: str, rss_kib: int | None) -> str:
    text = (f"Name:\t{name}\nUmask:\t0022\nState:\tS (sleeping)\n"
            f"Tgid:\t1\nPid:\t1\nPPid:\t1\n")
    if rss_kib is not None:
        text += (f"VmPeak:\t 5000000 kB\nVmSize:\t 4900000 kB\n"
                 f"VmHWM:\t {rss_kib} kB\nVmRSS:\t {rss_kib} kB\n"
                 f"RssAnon:\t {rss_kib} kB\n")
    return text + "Threads:\t1\n"


class FakeHost:
    """A temporary /proc and /sys tree the tests edit between samples."""

    def __init__(self, root: Path) -> None:
        self.root_path = root
        self.proc = root / "proc"
        self.sys = root / "sys"
        self.write("proc/meminfo", MEMINFO)
        self.write("proc/vmstat", vmstat(100, 200))
        self.write("proc/stat", PROC_STAT)
        self.write("proc/pressure/memory", PSI)
        self.write("sys/devices/system/cpu/online", "0-3,5\n")
        self.write("sys/devices/system/node/online", "0-1\n")
        for name, value in KSM.items():
            self.write(f"sys/kernel/mm/ksm/{name}", value + "\n")

    def set_memory(self, total_kib: int, free_kib: int) -> None:
        """Rewrite /proc/meminfo for a host of that size with that much free
        (buffers and page cache count as free for MoM's mem_free)."""
        self.write("proc/meminfo", (
            f"MemTotal:       {total_kib} kB\nMemFree:        {free_kib} kB\n"
            f"MemAvailable:   {free_kib} kB\nBuffers:        0 kB\n"
            f"Cached:         0 kB\nSwapTotal:      0 kB\nSwapFree:       0 kB\n"
            f"AnonPages:      {total_kib - free_kib} kB\n"))

    def write(self, relative: str, text: str) -> None:
        path = self.root_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def process(self, pid: int, comm: str, *, utime: int = 0,
                stime: int = 0, rss_kib: int | None = None,
                flags: int = 4194304) -> None:
        self.write(f"proc/{pid}/comm", comm[:15] + "\n")
        self.write(f"proc/{pid}/stat",
                   pid_stat(pid, comm[:15], utime, stime, flags))
        self.write(f"proc/{pid}/status", status(comm[:15], rss_kib))

    def remove(self, relative: str) -> None:
        path = self.root_path / relative
        if path.is_dir():
            for child in path.iterdir():
                self.remove(str(child.relative_to(self.root_path)))
            path.rmdir()
        else:
            path.unlink()


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
