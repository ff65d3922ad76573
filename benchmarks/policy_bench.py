#!/usr/bin/env python3
"""Measure how fast the policy engine parses and evaluates policy sets.

For each set: loads it (parse, check, write and compile the Python
source) and evaluates it over synthetic hosts and guests with full sample
histories.  Every evaluation round runs once with a host under memory
pressure and once with a comfortable host, so both branches of the balloon
and KSM policies are timed; guests vary between ballooned, full and below
their guaranteed minimum.

Loading is timed five ways, each on texts this process has not compiled
(every run adds a defvar of a distinct number to each policy, so the code
differs too, not only the text) except the last:
  parse       text to checked tree (compile_policy): what SetPolicy and
              validation need, everything that can refuse a policy;
  cache miss  PolicySet of the texts just parsed, with an empty code cache
              (a temporary directory): write and compile the Python source,
              store it;
  from cache  the same texts in a new PolicySet, the in-memory cache
              emptied but the disk cache warm: what a restart of momd costs;
  cold        PolicySet without a code cache;
  warm        the same texts again (in-memory cache): re-checking an
              unchanged set.

By default the sets are the shipped defaults (policies/), MoM's algorithm
(policies/mom), a vdsm-style set (benchmarks/policies/vdsm-style: balloon,
KSM, CPU and I/O tune) and its balloon and KSM part (01 to 03).  The last
line printed is JSON, per set:
    {"SET": {"parse_ms": {"cold": ..., "warm": ..., "front_end": ...,
                          "cache_miss": ..., "from_cache": ...},
             "eval_ms": {"10": ..., ...}, "us_per_guest": {"10": ..., ...},
             "cpu_us_per_guest": {"10": ..., ...}}}
(medians over the runs; eval_ms is per evaluation of the whole set, wall
time; cpu_us_per_guest counts this process's CPU time only).
Issue 13's targets on a 2-core machine, vdsm-style balloon and KSM set
(vdsm-balloon-ksm) at 1000 guests: at most 4 microseconds per guest,
parse at most 2 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from momservice.policy import (Entity, PolicySet, compile_policy,  # noqa: E402
                               forget_compiled_policies)
from momservice.policy_cache import PolicyCodeCache  # noqa: E402
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


def distinct(texts: dict[str, str], run: int) -> dict[str, str]:
    """The texts as a program no process has compiled yet: each policy gets
    a defvar of a number of its own (a comment alone would change the text
    but not the code)."""
    stamp = run * 10**9 + time.time_ns() % 10**9 + 1
    return {n: f"{t}\n(defvar bench_cold_run {stamp})\n" for n, t in texts.items()}


def bench_load(name: str, texts: dict[str, str], runs: int) -> dict:
    """The times to load a set, in ms, per way of loading it (see main's doc)."""
    front, miss, hit, cold, warm = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="policy-bench-") as directory:
        cache = PolicyCodeCache(directory)
        for i in range(max(runs, 20)):
            fresh = distinct(texts, 3 * i)
            start = time.perf_counter()
            for policy, text in fresh.items():
                compile_policy(text, policy)
            front.append(time.perf_counter() - start)
            start = time.perf_counter()  # checked above, compiled and stored now
            PolicySet(fresh, code_cache=cache)
            miss.append(time.perf_counter() - start)
            forget_compiled_policies()  # a restart: the disk cache is warm
            start = time.perf_counter()
            PolicySet(fresh, code_cache=cache)
            hit.append(time.perf_counter() - start)
            fresh = distinct(texts, 3 * i + 1)
            start = time.perf_counter()
            PolicySet(fresh, code_cache=None)
            cold.append(time.perf_counter() - start)
        PolicySet(texts, code_cache=None)
        for i in range(max(runs, 20)):
            start = time.perf_counter()
            PolicySet(texts, code_cache=None)
            warm.append(time.perf_counter() - start)
        entries = len(list(Path(directory).glob("*.code")))
    print(f"[{name}] parse (text to checked tree, cold): median ms [min .. max] "
          f"{spread(front, 1000)} over {len(front)} runs")
    print(f"[{name}] compile on a code cache miss (write, compile, store; parsed above): "
          f"{spread(miss, 1000)}")
    print(f"[{name}] load from the code cache (parse, link: a restart): {spread(hit, 1000)} "
          f"({entries} entries)")
    print(f"[{name}] load cold without a code cache: {spread(cold, 1000)}")
    print(f"[{name}] load warm (texts compiled in this process): {spread(warm, 1000)}")
    return {"cold": median_ms(cold), "warm": median_ms(warm), "front_end": median_ms(front),
            "cache_miss": median_ms(miss), "from_cache": median_ms(hit)}


def bench_set(name: str, sources: list[Path], counts: list[int], runs: int) -> dict:
    texts = read_policy_texts(find_policy_files(sources))
    rng = random.Random(42)
    parse_ms = bench_load(name, texts, runs)
    policies = PolicySet(texts, code_cache=None)
    print(f"[{name}] policies: {', '.join(policies.names)}")

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
    return {"parse_ms": parse_ms,
            "eval_ms": eval_ms, "us_per_guest": per_guest, "cpu_us_per_guest": per_guest_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy-dir", type=Path, action="append",
                        help="one policy set of these directories or files (repeatable) "
                             "instead of the default sets")
    parser.add_argument("--guests", default="10,100,1000",
                        help="comma-separated guest counts (default 10,100,1000)")
    parser.add_argument("--runs", type=int, default=15, help="runs per figure (default 15)")
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    if args.policy_dir:
        sets = {"+".join(str(d) for d in args.policy_dir): args.policy_dir}
    else:
        vdsm = root / "benchmarks" / "policies" / "vdsm-style"
        sets = {"defaults": [root / "policies"], "mom": [root / "policies" / "mom"],
                "vdsm-style": [vdsm],
                "vdsm-balloon-ksm": [vdsm / f"{n}.policy"
                                     for n in ("01-parameters", "02-balloon", "03-ksm")]}
    counts = [int(c) for c in args.guests.split(",")]
    figures = {name: bench_set(name, dirs, counts, args.runs) for name, dirs in sets.items()}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
