#!/usr/bin/env python3
"""Measure how fast the policy engine parses and evaluates policy sets.

For each set: parses it (tokenize, parse, check, write and compile the
Python source) and evaluates it over synthetic hosts and guests with full
sample histories.  Every evaluation round runs once with a host under
memory pressure and once with a comfortable host, so both branches of the
balloon and KSM policies are timed; guests vary between ballooned, full
and below their guaranteed minimum.

Parse is timed cold (texts this process has not compiled: each run adds a
distinct comment, so the engine's cache of compiled policies misses) and
warm (the same texts again: what re-checking an unchanged set costs).

By default the sets are the shipped defaults (policies/), MoM's algorithm
(policies/mom) and a vdsm-style balloon and KSM set
(benchmarks/policies/vdsm-style).  The last line printed is JSON, per set:
    {"SET": {"parse_ms": {"cold": ..., "warm": ...},
             "eval_ms": {"10": ..., ...}, "us_per_guest": {"10": ..., ...},
             "cpu_us_per_guest": {"10": ..., ...}}}
(medians over the runs; eval_ms is per evaluation of the whole set, wall
time; cpu_us_per_guest counts this process's CPU time only).
Issue 13's targets on a 2-core machine, vdsm-style set at 1000 guests:
at most 4 microseconds per guest, parse at most 2 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from momservice.policy import Entity, PolicySet  # noqa: E402
from momservice.policy_files import find_policy_files, read_policy_texts  # noqa: E402

HISTORY = 10
GiB = 1024 * 1024  # in KiB


def make_host(free_share: float, rng: random.Random) -> Entity:
    host = Entity.host(history_length=HISTORY)
    total = 256 * GiB
    for _ in range(HISTORY):
        free = int(total * free_share * rng.uniform(0.95, 1.05))
        host.add_sample({
            "mem_available": total, "mem_free": free, "mem_unused": free // 2,
            "anon_pages": total - free, "swap_total": 8 * GiB, "swap_usage": 0,
            "swap_in": 0, "swap_out": 0, "cpu_count": 64,
            "ksm_run": 1, "ksm_pages_to_scan": 100, "ksm_sleep_millisecs": 20,
            "ksm_merge_across_nodes": 1, "ksm_pages_shared": 1000,
            "ksm_pages_sharing": 5000, "ksm_pages_unshared": 200,
            "ksm_pages_volatile": 10, "ksm_full_scans": 3,
            "ksm_shareable": int(total * 0.9), "ksmd_cpu_usage": 2.5,
            "mem_pressure_some": 0.5, "mem_pressure_full": 0.1,
        })
    return host


def make_guests(count: int, rng: random.Random) -> list[Entity]:
    guests = []
    for i in range(count):
        guest = Entity.guest({"name": f"vm{i}", "uuid": f"00000000-0000-0000-0000-{i:012d}",
                              "pid": 1000 + i}, history_length=HISTORY)
        maximum = rng.choice((2, 4, 8, 16)) * GiB
        minimum = maximum // 4
        kind = i % 3  # ballooned, full, below its minimum
        current = {0: int(maximum * 0.7), 1: maximum, 2: minimum - 1024}[kind]
        for _ in range(HISTORY):
            unused = int(current * rng.uniform(0.05, 0.5))
            guest.add_sample({
                "balloon_cur": current, "balloon_max": maximum, "balloon_min": minimum,
                "mem_available": current, "mem_unused": unused,
                "mem_usable": unused + 1024, "disk_caches": 4096,
                "major_fault": rng.randrange(100), "minor_fault": rng.randrange(10000),
                "swap_in": 0, "swap_out": 0, "swap_total": GiB, "swap_usage": 0,
                "rss": current, "stats_age": 1.0,
            })
        guests.append(guest)
    return guests


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def spread(samples: list[float], scale: float) -> str:
    """Median with the lowest and highest sample, scaled (1000: ms)."""
    low, mid, high = min(samples), statistics.median(samples), max(samples)
    return f"{mid * scale:.3f} [{low * scale:.3f} .. {high * scale:.3f}]"


def bench_set(name: str, dirs: list[Path], counts: list[int], runs: int) -> dict:
    texts = read_policy_texts(find_policy_files(dirs))
    rng = random.Random(42)
    cold, warm = [], []
    for i in range(max(runs, 20)):
        fresh = {n: f"{t}\n# bench run {i} {time.time_ns()}\n" for n, t in texts.items()}
        start = time.perf_counter()
        PolicySet(fresh)
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        policies = PolicySet(texts)
        warm.append(time.perf_counter() - start)
    print(f"[{name}] policies: {', '.join(policies.names)}")
    print(f"[{name}] parse cold: median ms [min .. max] {spread(cold, 1000)} "
          f"over {len(cold)} runs")
    print(f"[{name}] parse warm: median ms [min .. max] {spread(warm, 1000)}")

    hosts = (make_host(0.10, rng), make_host(0.60, rng))  # pressure, comfortable
    eval_ms: dict[str, float] = {}
    per_guest: dict[str, float] = {}
    per_guest_cpu: dict[str, float] = {}
    for count in counts:
        guests = make_guests(count, rng)
        times, cpu = [], []
        for _ in range(runs):
            start, start_cpu = time.perf_counter(), time.process_time()
            for host in hosts:
                result = policies.evaluate(host, guests)
                if result.error is not None:
                    raise SystemExit(f"policy error: {result.error}")
            cpu.append((time.process_time() - start_cpu) / len(hosts))
            times.append((time.perf_counter() - start) / len(hosts))
        eval_ms[str(count)] = median_ms(times)
        per_guest[str(count)] = round(statistics.median(times) * 1e6 / count, 2)
        per_guest_cpu[str(count)] = round(statistics.median(cpu) * 1e6 / count, 2)
        controlled = len(result.guest_controls)
        # CPU time is what a cycle costs the service; on a shared machine
        # the wall time also counts the waits for a core.
        print(f"[{name}] eval {count} guests: median ms [min .. max] "
              f"{spread(times, 1000)}; us/guest {spread(times, 1e6 / count)}, "
              f"CPU {spread(cpu, 1e6 / count)} ({controlled} guests controlled)")
    return {"parse_ms": {"cold": median_ms(cold), "warm": median_ms(warm)},
            "eval_ms": eval_ms, "us_per_guest": per_guest, "cpu_us_per_guest": per_guest_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy-dir", type=Path, action="append",
                        help="one policy set of these directories (repeatable) instead "
                             "of the three default sets")
    parser.add_argument("--guests", default="10,100,1000",
                        help="comma-separated guest counts (default 10,100,1000)")
    parser.add_argument("--runs", type=int, default=15, help="runs per figure (default 15)")
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    if args.policy_dir:
        sets = {"+".join(str(d) for d in args.policy_dir): args.policy_dir}
    else:
        sets = {"defaults": [root / "policies"], "mom": [root / "policies" / "mom"],
                "vdsm-style": [root / "benchmarks" / "policies" / "vdsm-style"]}
    counts = [int(c) for c in args.guests.split(",")]
    figures = {name: bench_set(name, dirs, counts, args.runs) for name, dirs in sets.items()}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
