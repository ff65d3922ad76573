#!/usr/bin/env python3
"""Measure how fast the policy engine parses and evaluates a policy set.

Parses the set (tokenize, parse, compile) and evaluates it over synthetic
hosts and guests with full sample histories.  Every evaluation round runs
once with a host under memory pressure and once with a comfortable host,
so both branches of the balloon and KSM policies are timed; guests vary
between ballooned, full and below their guaranteed minimum.

The last line printed is JSON:
    {"parse_ms": ..., "eval_ms": {"10": ..., "100": ..., "1000": ...}}
(medians over several runs; eval_ms is per evaluation of the whole set).
Targets on a 2-core machine with the shipped set: parse <= 2 ms,
evaluation <= 20 microseconds per guest.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy-dir", type=Path, action="append",
                        help="policy directory (repeatable; default: the shipped policies/)")
    parser.add_argument("--guests", default="10,100,1000",
                        help="comma-separated guest counts (default 10,100,1000)")
    parser.add_argument("--runs", type=int, default=15, help="runs per figure (default 15)")
    args = parser.parse_args()
    dirs = args.policy_dir or [Path(__file__).resolve().parent.parent / "policies"]
    texts = read_policy_texts(find_policy_files(dirs))
    rng = random.Random(42)

    parse_times = []
    for _ in range(max(args.runs, 20)):
        start = time.perf_counter()
        policies = PolicySet(texts)
        parse_times.append(time.perf_counter() - start)
    print(f"policies: {', '.join(policies.names)}")
    print(f"parse: median {median_ms(parse_times)} ms over {len(parse_times)} runs")

    hosts = (make_host(0.10, rng), make_host(0.60, rng))  # pressure, comfortable
    eval_ms: dict[str, float] = {}
    for count in (int(c) for c in args.guests.split(",")):
        guests = make_guests(count, rng)
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            for host in hosts:
                result = policies.evaluate(host, guests)
                if result.error is not None:
                    raise SystemExit(f"policy error: {result.error}")
            times.append((time.perf_counter() - start) / len(hosts))
        eval_ms[str(count)] = median_ms(times)
        per_guest_us = eval_ms[str(count)] * 1000 / count
        controlled = len(result.guest_controls)
        print(f"eval {count} guests: median {eval_ms[str(count)]} ms "
              f"({per_guest_us:.1f} us/guest; {controlled} guests controlled)")

    print(json.dumps({"parse_ms": median_ms(parse_times), "eval_ms": eval_ms}))


if __name__ == "__main__":
    main()
