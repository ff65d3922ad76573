#!/usr/bin/env python3
"""Guests coming and going continuously: does momd keep an exact account, and stay lean?

momd runs as a process on a private system bus with polkitd (as
``cycle_bench.py --bus``), managing libvirt's test driver served by a
private libvirtd (``test:///default``: the one test-driver instance a
daemon shares between its clients, so that this script's connection
changes what momd sees).  The script keeps ``--alive`` guests running and
replaces the oldest one again and again (destroy, undefine, define,
start: four lifecycle events each) until ``--events`` lifecycle events
have happened, spread over ``--minutes``.

A listener on the bus records every ``InterfacesAdded`` and
``InterfacesRemoved`` of a guest object.  At the end, once the bus has
settled, every guest must have had exactly one InterfacesAdded, and one
InterfacesRemoved if it was destroyed, in that order, and the guests on
the bus must be the ones running.  momd's resident memory, threads and
open file descriptors are read after the first fill (and a warm-up) and
at the end.

Targets (issue 13): no missed or duplicate InterfacesAdded/Removed, RSS
growth below 5 MB, no leaked threads or file descriptors.  The last line
printed is JSON with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import libvirt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.cycle_bench import _proc_memory_mb  # noqa: E402
from momservice.contract import (  # noqa: E402
    BUS_NAME, MANAGER_PATH, OBJECT_MANAGER_INTERFACE, guest_path,
)
from tests.helpers.libvirt_node import domain_xml, guest_specs  # noqa: E402
from tests.helpers.momd_process import Momd, momd_config  # noqa: E402
from tests.helpers.private_bus import system_bus_with_polkit  # noqa: E402
from tests.helpers.private_libvirtd import PrivateLibvirtd, find_libvirtd  # noqa: E402

_GUEST_PREFIX = f"{MANAGER_PATH}/guest/"


class BusRecorder:
    """Every InterfacesAdded/Removed of a guest object, in order, from a thread of its own."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.events: list[tuple[float, str, str]] = []   # (monotonic, "added"/"removed", path)
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="bus-recorder", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> "BusRecorder":
        self._thread.start()
        if not self._ready.wait(30):
            raise SystemExit(f"the bus listener did not start: {self.error}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def seed(self, paths: set[str]) -> None:
        """Objects there before any signal was recorded, as if added first."""
        with self._lock:
            self.events[:0] = [(0.0, "added", path) for path in sorted(paths)]

    def snapshot(self) -> list[tuple[float, str, str]]:
        with self._lock:
            return list(self.events)

    def _run(self) -> None:
        try:
            asyncio.run(self._listen())
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            self.error = err
            self._ready.set()

    async def _listen(self) -> None:
        from dbus_next import BusType, Message, MessageType
        from dbus_next.aio import MessageBus

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        bus = await MessageBus(bus_address=self.address, bus_type=BusType.SYSTEM).connect()
        rule = (f"type='signal',sender='{BUS_NAME}',interface='{OBJECT_MANAGER_INTERFACE}',"
                f"path='{MANAGER_PATH}'")
        await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                               interface="org.freedesktop.DBus", member="AddMatch",
                               signature="s", body=[rule]))

        def on_message(message: Message) -> None:
            if message.message_type != MessageType.SIGNAL:
                return
            kind = {"InterfacesAdded": "added", "InterfacesRemoved": "removed"}.get(
                message.member)
            path = message.body[0] if message.body else ""
            if kind and path.startswith(_GUEST_PREFIX):
                with self._lock:
                    self.events.append((time.monotonic(), kind, path))

        bus.add_message_handler(on_message)
        self._ready.set()
        await self._stop.wait()
        bus.disconnect()


def _managed_guest_paths(address: str) -> set[str]:
    out = subprocess.run(["busctl", f"--address={address}", "--json=short", "call", BUS_NAME,
                          MANAGER_PATH, OBJECT_MANAGER_INTERFACE, "GetManagedObjects"],
                         check=True, capture_output=True, text=True).stdout
    return {path for path in json.loads(out)["data"][0] if path.startswith(_GUEST_PREFIX)}


def _process_figures(pid: int) -> dict:
    rss, _peak = _proc_memory_mb(pid)
    return {"rss_mb": round(rss, 2), "threads": len(os.listdir(f"/proc/{pid}/task")),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def _wait(predicate, what: str, timeout: float, momd: Momd) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if momd.process.poll() is not None:
            raise SystemExit(f"momd exited while waiting for {what}:\n{momd.log_text()[-4000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def _on_bus(recorder: BusRecorder) -> set[str]:
    """Guest paths on the bus according to the signals so far."""
    present: set[str] = set()
    for _t, kind, path in recorder.snapshot():
        (present.add if kind == "added" else present.discard)(path)
    return present


def check_account(events: list[tuple[float, str, str]], started: set[str],
                  destroyed: set[str]) -> dict:
    """Compare the signals with what happened: per guest object, one added,
    then one removed if the guest was destroyed."""
    seen: dict[str, list[str]] = defaultdict(list)
    for _t, kind, path in events:
        seen[path].append(kind)
    missed_added = sorted(p for p in started if "added" not in seen.get(p, []))
    missed_removed = sorted(p for p in destroyed if "removed" not in seen.get(p, []))
    duplicates = sorted(p for p, kinds in seen.items()
                        if kinds.count("added") > 1 or kinds.count("removed") > 1)
    out_of_order = sorted(p for p, kinds in seen.items()
                          if kinds and kinds[0] != "added")
    strangers = sorted(p for p in seen if p not in started)
    return {"missed_added": missed_added, "missed_removed": missed_removed,
            "duplicates": duplicates, "out_of_order": out_of_order, "strangers": strangers}


def churn(conn: libvirt.virConnect, alive: int, events: int, seconds: float,
          momd: Momd, recorder: BusRecorder) -> dict:
    """Keep ``alive`` guests, replace the oldest until ``events`` lifecycle events."""
    specs = iter(guest_specs(10 ** 6, prefix="churn", min_guarantee_every=3))
    # test:///default starts with a running domain of its own: momd manages
    # it too, exported before it owned its name (so without a signal anyone
    # could match): taken from GetManagedObjects, as a client would.
    present = _managed_guest_paths(momd.system.address)
    recorder.seed(present)
    running: list[tuple[libvirt.virDomain, str]] = []
    started: set[str] = set(present)
    destroyed: set[str] = set()

    def start_one() -> None:
        spec = next(specs)
        dom = conn.defineXML(domain_xml(spec))
        dom.create()
        path = guest_path(spec.uuid)
        running.append((dom, path))
        started.add(path)

    for _ in range(alive):
        start_one()
    _wait(lambda: _on_bus(recorder) >= {p for _d, p in running} | present,
          "the first guests on the bus", 300, momd)
    time.sleep(5)   # a few cycles with every guest known, before the baseline
    before = _process_figures(momd.process.pid)
    print(f"{alive} guests on the bus; momd {before}", flush=True)

    replacements = max(1, events // 4)
    pause = seconds / replacements
    begin = time.monotonic()
    for n in range(replacements):
        dom, path = running.pop(0)
        dom.destroy()
        dom.undefine()
        destroyed.add(path)
        start_one()
        if (n + 1) % max(1, replacements // 10) == 0:
            print(f"{4 * (n + 1)} events after {time.monotonic() - begin:.0f} s; "
                  f"momd {_process_figures(momd.process.pid)}", flush=True)
        lag = begin + (n + 1) * pause - time.monotonic()
        if lag > 0:
            time.sleep(lag)
        if momd.process.poll() is not None:
            raise SystemExit(f"momd exited during the churn:\n{momd.log_text()[-4000:]}")
    elapsed = time.monotonic() - begin
    expected = {p for _d, p in running} | present
    try:
        _wait(lambda: _on_bus(recorder) == expected, "the bus to settle", 120, momd)
    except SystemExit as err:
        on_bus = _on_bus(recorder)
        print(f"{err}: on the bus but not running: {sorted(on_bus - expected)[:5]}; "
              f"running but not on the bus: {sorted(expected - on_bus)[:5]}", flush=True)
    time.sleep(5)
    after = _process_figures(momd.process.pid)
    account = check_account(recorder.snapshot(), started, destroyed)
    settled = _on_bus(recorder) == expected
    return {"settled": settled, "events": 4 * replacements, "seconds": round(elapsed, 1), "alive": alive,
            "guests_started": len(started), "signals": len(recorder.snapshot()),
            "before": before, "after": after,
            "rss_growth_mb": round(after["rss_mb"] - before["rss_mb"], 2),
            "thread_growth": after["threads"] - before["threads"],
            "fd_growth": after["fds"] - before["fds"],
            **{k: len(v) for k, v in account.items()},
            "examples": {k: v[:3] for k, v in account.items() if v}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10000,
                        help="lifecycle events in all (four per replaced guest)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--alive", type=int, default=200, help="guests running at a time")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="momd's collection and policy interval, s")
    args = parser.parse_args()
    if os.geteuid() != 0 or not find_libvirtd():
        raise SystemExit("churn_bench needs root and libvirtd (a private one is started)")
    workdir = Path(tempfile.mkdtemp(prefix="mom-churn-bench-"))
    os.chmod(workdir, 0o755)
    try:
        with PrivateLibvirtd(workdir / "lvd") as daemon, \
                system_bus_with_polkit(workdir / "bus") as system:
            uri = daemon.uri("test", "/default")
            conn = libvirt.open(uri)
            config = momd_config(workdir, uri, engine_interval=args.interval,
                                 collect_interval=args.interval, verbosity="warning",
                                 controllers="Balloon, KSM")
            with BusRecorder(system.address) as recorder:
                momd = Momd(system, config, workdir / "momd.log", timeout=120)
                try:
                    result = churn(conn, args.alive, args.events, args.minutes * 60,
                                   momd, recorder)
                finally:
                    momd.stop()
            conn.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ok = result["settled"] and (not any(result[k] for k in ("missed_added", "missed_removed", "duplicates",
                                      "out_of_order", "strangers"))
          and result["rss_growth_mb"] < 5 and result["thread_growth"] <= 0
          and result["fd_growth"] <= 0)
    print(f"{result['events']} lifecycle events in {result['seconds']} s, "
          f"{result['guests_started']} guests, {result['signals']} signals; missed added "
          f"{result['missed_added']}, missed removed {result['missed_removed']}, duplicates "
          f"{result['duplicates']}, out of order {result['out_of_order']}; RSS "
          f"{result['before']['rss_mb']} -> {result['after']['rss_mb']} MB, threads "
          f"{result['before']['threads']} -> {result['after']['threads']}, fds "
          f"{result['before']['fds']} -> {result['after']['fds']}: "
          f"{'targets met' if ok else 'TARGETS NOT MET'}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
