#!/usr/bin/env python3
"""Measure momd's D-Bus interface with many guests.

Starts a private system bus (tests/helpers/private_bus.py, no polkit: only
reads are timed) and momd on it as a process, managing N guests of
libvirt's test driver with the shipped policies, collecting and
evaluating every --interval seconds (default 5, MoM's collection interval;
one evaluation per collection makes a cycle one of each).  Then, while momd's loop runs, it times GetManagedObjects (with
busctl, a C client, so that the figure is the service's and not the
Python client's unmarshalling; the dbus-next client's time is printed
too), round trips of Properties.Get on guest objects spread over several
cycles, and counts the PropertiesChanged signals of each cycle (the window
between two changes of the manager's LastEvaluation) against the objects
that changed in it.

The last line printed is JSON:
    {"guests": 1000, "get_managed_objects_ms": ..., "get_p99_ms": ...,
     "signals_per_cycle": ..., "changed_objects_per_cycle": ...}
Targets on a 2-core machine: GetManagedObjects <= 200 ms, Get p99 <= 5 ms,
signals per cycle <= guests that changed + 2 (the manager and the host).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dbus_next import BusType, Message, MessageType  # noqa: E402
from dbus_next.aio import MessageBus  # noqa: E402

from momservice.contract import (BUS_NAME, GUEST_INTERFACE, MANAGER_PATH,  # noqa: E402
                                 OBJECT_MANAGER_INTERFACE, PROPERTIES_INTERFACE)
from tests.helpers.libvirt_node import node_uri, write_node_xml  # noqa: E402
from tests.helpers.momd_process import Momd, momd_config  # noqa: E402
from tests.helpers.private_bus import system_bus_with_polkit  # noqa: E402


async def measure(address: str, guests: int, gets: int, cycles: int,
                  spacing: float, interval: float) -> dict:
    bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
    signals: list[tuple[float, str, list[str]]] = []

    def on_message(m: Message) -> None:
        if m.message_type == MessageType.SIGNAL and m.member == "PropertiesChanged":
            signals.append((time.monotonic(), m.path, list(m.body[1])))


    times = []
    for _ in range(5):
        start = time.perf_counter()
        reply = await bus.call(Message(destination=BUS_NAME, path=MANAGER_PATH,
                                       interface=OBJECT_MANAGER_INTERFACE,
                                       member="GetManagedObjects"))
        times.append(time.perf_counter() - start)
        assert reply.message_type == MessageType.METHOD_RETURN, reply.body
    paths = [p for p in reply.body[0] if "/guest/" in p]
    assert len(paths) == guests, f"{len(paths)} guests on the bus, expected {guests}"
    python_ms = statistics.median(times) * 1000
    gmo_ms = busctl_ms(address, OBJECT_MANAGER_INTERFACE, "GetManagedObjects")
    print(f"GetManagedObjects ({len(reply.body[0])} objects): median {gmo_ms:.1f} ms with "
          f"busctl, {python_ms:.1f} ms with the dbus-next client")

    rtts = []
    # Spread over several cycles of momd's loop, so that calls meet it busy.
    for i in range(gets):
        await asyncio.sleep(spacing)
        start = time.perf_counter()
        reply = await bus.call(Message(destination=BUS_NAME, path=paths[i % len(paths)],
                                       interface=PROPERTIES_INTERFACE, member="Get", signature="ss",
                                       body=[GUEST_INTERFACE, "BalloonCurrent"]))
        rtts.append(time.perf_counter() - start)
        assert reply.message_type == MessageType.METHOD_RETURN, reply.body
    rtts.sort()
    p50, p99 = rtts[len(rtts) // 2] * 1000, rtts[int(len(rtts) * 0.99)] * 1000
    print(f"Get round trip over {gets} calls while the loop runs: p50 {p50:.2f} ms, "
          f"p99 {p99:.2f} ms")

    # Subscribed only now: receiving a thousand signals a cycle keeps a
    # Python client busy enough to delay its own Get calls.
    bus.add_message_handler(on_message)
    await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                           interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                           body=[f"type='signal',sender='{BUS_NAME}',"
                                 f"interface='{PROPERTIES_INTERFACE}'"]))
    deadline = time.monotonic() + (cycles + 2) * interval
    marks = lambda: [t for t, p, c in signals if p == MANAGER_PATH and "LastEvaluation" in c]
    while len(marks()) < cycles + 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    bus.disconnect()
    edges = marks()
    windows = []
    for begin, end in zip(edges, edges[1:]):
        inside = [(p, c) for t, p, c in signals if begin < t <= end]
        windows.append((len(inside), len({p for p, _ in inside})))
    per_cycle = statistics.mean(n for n, _ in windows)
    changed = statistics.mean(c for _, c in windows)
    excess = max(n - c for n, c in windows)
    print(f"{len(windows)} cycles: {per_cycle:.1f} PropertiesChanged per cycle for "
          f"{changed:.1f} changed objects (most signals beyond one per object: {excess})")
    return {"guests": guests, "interval_s": interval,
            "get_managed_objects_ms": round(gmo_ms, 1),
            "get_p99_ms": round(p99, 2), "signals_per_cycle": round(per_cycle, 1),
            "changed_objects_per_cycle": round(changed, 1)}


def busctl_ms(address: str, interface: str, member: str, runs: int = 5) -> float:
    """Median time of one call made by busctl, less busctl's own start-up (a Ping).

    ``--quiet``: the reply is received and parsed but not printed; printing
    a thousand guests' properties as text is busctl's own work (several
    hundred milliseconds of it), not the service's.
    """
    def timed(iface: str, name: str, path: str) -> float:
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(["busctl", f"--address={address}", "--quiet", "call", BUS_NAME,
                            path, iface, name], check=True, stdout=subprocess.DEVNULL)
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)
    call = timed(interface, member, MANAGER_PATH)
    ping = timed("org.freedesktop.DBus.Peer", "Ping", MANAGER_PATH)
    return max(0.0, call - ping) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=1000)
    parser.add_argument("--gets", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--interval", type=float, default=5.0,
                        help="momd's collection and evaluation interval, s")
    parser.add_argument("--spacing", type=float, default=0.02,
                        help="seconds between two Get calls (default 0.02)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mom-bus-bench-"))
    os.chmod(tmp, 0o755)
    try:
        node = write_node_xml(tmp / "node.xml", args.guests)
        config = momd_config(tmp, node_uri(node), engine_interval=args.interval,
                             collect_interval=args.interval, verbosity="warning")
        with system_bus_with_polkit(tmp / "bus", polkit=False) as system:
            momd = Momd(system, config, tmp / "momd.log", timeout=60)
            print(f"momd on the bus with {args.guests} guests")
            try:
                result = asyncio.run(measure(system.address, args.guests, args.gets,
                                             args.cycles, args.spacing, args.interval))
            finally:
                momd.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
