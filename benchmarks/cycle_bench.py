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

With --bus (root) it measures what an operator sees instead: momd as a
process (python -m momservice.momd) on a private system bus with polkitd
(tests/helpers/private_bus.py), managing the N guests of the test driver
in a private libvirtd (as --own-daemon), collecting and evaluating every
--interval seconds (default 1).  Once all guests are on the bus it reads
momd's CPU time (utime + stime of /proc/PID/stat, all threads) over
--windows windows of --window seconds each, and prints per window the CPU
ms per cycle (CPU over the window divided by the cycles the interval fits
in it), RSS (VmRSS, and VmHWM for the peak) and the time of one
GetManagedObjects made with busctl (less busctl's own start-up).  The last
line is then JSON:
    {"guests": 1000, "interval_s": 1.0, "cpu_ms_per_cycle": ...,
     "cpu_ms_spread": [min, max], "rss_mb": ..., "rss_peak_mb": ...,
     "get_managed_objects_ms": ...}
Targets at 1000 guests and 1 s on a 2-core machine: cpu_ms_per_cycle <= 50,
rss_mb <= 55, get_managed_objects_ms <= 100.
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bus_bench import busctl_ms  # noqa: E402
from momservice.collectors import HostCollector  # noqa: E402
from momservice.collectors.ksm import DEFAULT_KSM_DIR, KSM_FILES  # noqa: E402
from momservice.contract import BUS_NAME, MANAGER_PATH, OBJECT_MANAGER_INTERFACE  # noqa: E402
from momservice.controllers import BalloonController, KsmController  # noqa: E402
from momservice.engine.core import Engine  # noqa: E402
from momservice.hypervisor.libvirt import LibvirtHypervisor  # noqa: E402
from momservice.policy import PolicySet  # noqa: E402
from momservice.policy_files import find_policy_files, read_policy_texts  # noqa: E402
from tests.helpers.libvirt_node import node_uri, write_node_xml  # noqa: E402
from tests.helpers.momd_process import Momd, momd_config  # noqa: E402
from tests.helpers.private_bus import system_bus_with_polkit  # noqa: E402
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


def _proc_cpu_seconds(pid: int) -> float:
    # Fields 14 and 15 of /proc/PID/stat (utime, stime), after the command
    # name in parentheses, which may itself contain spaces.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def _guests_on_bus(address: str) -> int:
    out = subprocess.run(["busctl", f"--address={address}", "--json=short", "call", BUS_NAME,
                          MANAGER_PATH, OBJECT_MANAGER_INTERFACE, "GetManagedObjects"],
                         check=True, capture_output=True, text=True).stdout
    return sum(1 for path in json.loads(out)["data"][0] if "/guest/" in path)


def bench_bus(workdir: Path, node: Path, guests: int, interval: float, window: float,
              windows: int, in_process: bool, policies: Path) -> dict:
    """momd as a process on a private bus with polkitd, the test driver in a libvirtd
    (``in_process``: in momd, which then makes no libvirt RPCs)."""
    with (contextlib.nullcontext() if in_process else PrivateLibvirtd(workdir / "lvd")) as daemon, \
            system_bus_with_polkit(workdir / "bus") as system:
        uri = node_uri(node) if daemon is None else daemon.uri("test", str(node))
        print(f"test driver {'in momd' if daemon is None else 'in a libvirtd of our own'}: {uri}")
        config = momd_config(workdir, uri, engine_interval=interval, policies=policies,
                             collect_interval=interval, verbosity="warning")
        start = time.perf_counter()
        momd = Momd(system, config, workdir / "momd.log", timeout=120)
        try:
            pid = momd.process.pid
            deadline = time.monotonic() + 300
            while _guests_on_bus(system.address) < guests:
                if time.monotonic() > deadline or momd.process.poll() is not None:
                    raise SystemExit(f"the guests did not all appear:\n{momd.log_text()}")
                time.sleep(0.5)
            print(f"momd (pid {pid}) on the bus with {guests} guests after "
                  f"{time.perf_counter() - start:.1f} s; warming up for {3 * interval:.0f} s")
            time.sleep(3 * interval)
            cpu, gmo = [], []
            for n in range(windows):
                c0, t0 = _proc_cpu_seconds(pid), time.monotonic()
                time.sleep(window)
                c1, t1 = _proc_cpu_seconds(pid), time.monotonic()
                cycles = (t1 - t0) / interval
                cpu.append((c1 - c0) / cycles * 1000)
                rss, peak = _proc_memory_mb(pid)
                # Timed between the CPU windows: busctl's calls are momd's work too.
                gmo.append(busctl_ms(system.address, OBJECT_MANAGER_INTERFACE,
                                     "GetManagedObjects", runs=3))
                print(f"window {n + 1}: {cpu[-1]:.1f} ms CPU per cycle over {cycles:.0f} cycles, "
                      f"RSS {rss:.1f} MB (peak {peak:.1f}), GetManagedObjects {gmo[-1]:.1f} ms")
            momctl = _momctl_figures(system.address, guests, 2 * interval)
            if momd.process.poll() is not None:
                raise SystemExit(f"momd exited:\n{momd.log_text()}")
        finally:
            momd.stop()
    return {"guests": guests, "interval_s": interval, "driver": "momd" if in_process else "libvirtd",
            "cpu_ms_per_cycle": round(statistics.median(cpu), 1),
            "cpu_ms_spread": [round(min(cpu), 1), round(max(cpu), 1)],
            "rss_mb": round(rss, 1), "rss_peak_mb": round(peak, 1),
            "get_managed_objects_ms": round(statistics.median(gmo), 1), **momctl}


def _momctl_figures(address: str, guests: int, monitor_seconds: float) -> dict:
    """Wall time of ``momctl guests`` (its rows counted) and whether ``momctl
    monitor`` runs for a while and shows the guests (what an operator types)."""
    momctl = [sys.executable, "-m", "momservice.cli.momctl", "--address", address]
    times = []
    for _ in range(3):
        start = time.perf_counter()
        out = subprocess.run([*momctl, "guests"], check=True, capture_output=True, text=True,
                             cwd=ROOT, timeout=120).stdout
        times.append(time.perf_counter() - start)
    rows = sum(1 for line in out.splitlines() if line.strip()) - 1  # less the heading
    start = time.perf_counter()
    monitor = subprocess.run([*momctl, "monitor", "--seconds", str(monitor_seconds)],
                             capture_output=True, text=True, cwd=ROOT,
                             timeout=monitor_seconds + 120)
    monitor_s = time.perf_counter() - start
    print(f"momctl guests: {statistics.median(times):.2f} s (median of 3), {rows} rows for "
          f"{guests} guests; momctl monitor --seconds {monitor_seconds:g}: exit "
          f"{monitor.returncode} after {monitor_s:.1f} s, {len(monitor.stdout)} characters")
    if monitor.returncode != 0:
        print(monitor.stderr[-2000:])
    return {"momctl_guests_s": round(statistics.median(times), 2), "momctl_guests_rows": rows,
            "momctl_monitor_exit": monitor.returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--own-daemon", action="store_true",
                        help="run the test driver in a private libvirtd (needs root)")
    parser.add_argument("--bus", action="store_true",
                        help="measure momd as a process on a private bus with polkitd, "
                             "the test driver in a private libvirtd (needs root)")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="with --bus: momd's collection and policy interval, s")
    parser.add_argument("--window", type=float, default=10.0,
                        help="with --bus: seconds of one CPU measuring window")
    parser.add_argument("--windows", type=int, default=3,
                        help="with --bus: how many windows")
    parser.add_argument("--policies", type=Path, default=ROOT / "policies",
                        help="with --bus: the policy set momd runs (default: the shipped one)")
    parser.add_argument("--in-process", action="store_true",
                        help="with --bus: the test driver inside momd (test:///node.xml), so "
                             "that no libvirt RPC is counted; without it, in a private libvirtd")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mom-cycle-bench-"))
    os.chmod(workdir, 0o755)
    try:
        node = write_node_xml(workdir / "node.xml", args.guests)
        if (args.own_daemon or (args.bus and not args.in_process)) and (os.geteuid() != 0 or not find_libvirtd()):
            raise SystemExit("--own-daemon and --bus (without --in-process) need root and "
                             "libvirtd")
        if args.bus:
            result = bench_bus(workdir, node, args.guests, args.interval, args.window,
                               args.windows, args.in_process, args.policies.resolve())
            print(json.dumps(result))
            return
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
