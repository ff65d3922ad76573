#!/usr/bin/env python3
"""Measure momd's cost per control cycle with many guests.

Runs the real engine (momservice.engine.core.Engine with the libvirt
hypervisor interface, the host collector, the shipped policies and the
balloon and KSM controllers) against libvirt's test driver with a
generated node of N running guests.  By default the test driver runs
inside this process, so its own memory (some 13 MB for 1000 guests) and
CPU count as momd's.  With --own-daemon (root) it runs in a libvirtd of the
benchmark's own (tests/helpers/private_libvirtd.py), as a real host's
libvirtd would; but the test driver cannot report balloon statistics in
bulk, so every cycle then costs two RPCs per guest that a real QEMU host
replaces with one getAllDomainStats call.  One cycle is what happens every
policy interval: a host sample, one bulk guest sample, a resync of the
guest list, an evaluation of the policy set and applying its result.  The
host statistics are the real /proc (read only); the KSM controller writes a
temporary copy of /sys/kernel/mm/ksm, never the real one.

The last line printed is JSON:
    {"guests": 1000, "cpu_ms_per_cycle": ..., "rss_mb": ...}
cpu_ms_per_cycle is the median process CPU time (all threads) per cycle;
rss_mb the peak resident size of this process.
Targets on a 2-core machine: cpu_ms_per_cycle <= 100, rss_mb <= 60.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from momservice.collectors import HostCollector  # noqa: E402
from momservice.collectors.ksm import DEFAULT_KSM_DIR, KSM_FILES  # noqa: E402
from momservice.controllers import BalloonController, KsmController  # noqa: E402
from momservice.engine.core import Engine  # noqa: E402
from momservice.hypervisor.libvirt import LibvirtHypervisor  # noqa: E402
from momservice.policy import PolicySet  # noqa: E402
from momservice.policy_files import find_policy_files, read_policy_texts  # noqa: E402
from tests.helpers.libvirt_node import node_uri, write_node_xml  # noqa: E402
from tests.helpers.private_libvirtd import PrivateLibvirtd, find_libvirtd  # noqa: E402


def copy_ksm_tree(target: Path) -> Path:
    """A writable copy of the KSM tunables and counters (zeros if no KSM here)."""
    target.mkdir(parents=True)
    for name in KSM_FILES:
        source = DEFAULT_KSM_DIR / name
        (target / name).write_text(source.read_text() if source.exists() else "0\n")
    return target


async def bench(uri: str, guests: int, cycles: int, workdir: Path) -> dict:
    ksm_dir = copy_ksm_tree(workdir / "ksm")
    policies = PolicySet(read_policy_texts(find_policy_files([ROOT / "policies"])))
    hypervisor = LibvirtHypervisor(uri)
    engine = Engine(hypervisor, HostCollector(), policies,
                    [BalloonController(hypervisor), KsmController(ksm_dir)],
                    # The loops must not run on their own: the benchmark drives.
                    host_interval=3600, guest_interval=3600, manager_interval=3600,
                    policy_interval=3600)
    start = time.perf_counter()
    await engine.start()
    print(f"start with {guests} guests: {time.perf_counter() - start:.2f} s")
    cpu = []
    applied = 0
    try:
        for _ in range(cycles):
            t0 = time.process_time()
            engine.collect_host()
            await engine.collect_guests()
            await hypervisor.resync()
            evaluation = await engine.evaluate()
            cpu.append(time.process_time() - t0)
            applied += len(evaluation.applied_balloons)
            if evaluation.result.error is not None:
                raise SystemExit(f"policy error: {evaluation.result.error}")
    finally:
        await engine.stop()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{cycles} cycles: median {statistics.median(cpu) * 1000:.1f} ms CPU, "
          f"max {max(cpu) * 1000:.1f} ms; {applied} balloon changes; peak RSS {rss_mb:.1f} MB")
    return {"guests": guests, "cpu_ms_per_cycle": round(statistics.median(cpu) * 1000, 1),
            "rss_mb": round(rss_mb, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--own-daemon", action="store_true",
                        help="run the test driver in a private libvirtd (needs root)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mom-cycle-bench-"))
    os.chmod(workdir, 0o755)
    try:
        node = write_node_xml(workdir / "node.xml", args.guests)
        if args.own_daemon and (os.geteuid() != 0 or not find_libvirtd()):
            raise SystemExit("--own-daemon needs root and libvirtd")
        with (PrivateLibvirtd(workdir / "lvd") if args.own_daemon
              else contextlib.nullcontext()) as daemon:
            uri = daemon.uri("test", str(node)) if daemon else node_uri(node)
            print(f"test driver {'in a libvirtd of our own' if daemon else 'in process'}: {uri}")
            result = asyncio.run(bench(uri, args.guests, args.cycles, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
