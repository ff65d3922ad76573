"""``momctl monitor``: a live view of momd, redrawn from its signals.

One snapshot (Manager and Host properties, GetManagedObjects), then the
state follows ``PropertiesChanged`` from every object under
/org/ovirt/mom1 and ``InterfacesAdded`` / ``InterfacesRemoved`` on the
manager (guests come and go).  The screen is redrawn when something
changed, at most every ``--interval`` seconds.  On a terminal each frame
replaces the last (ANSI clear screen + home); otherwise frames are appended
as plain text.  Ctrl-C (SIGINT), SIGTERM or ``--seconds`` end it with exit
code 0.  If momd leaves the bus, the screen says so and the monitor waits
for it to come back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from typing import Any, TextIO

from dbus_next import Message, MessageType

from ..contract import (BUS_NAME, GUEST_INTERFACE, HOST_INTERFACE, HOST_PATH, MANAGER_INTERFACE,
                        MANAGER_PATH, OBJECT_MANAGER_INTERFACE, PROPERTIES_INTERFACE)
from . import exitcodes
from .bus_client import MomClient, MomctlError, guests_of, unwrap
from .bus_commands import bus_options, guest_table, run_with_client, status_lines
from .policy_tools import UsageError

CLEAR = "\x1b[H\x1b[2J"

MATCH_RULES = (
    f"type='signal',sender='{BUS_NAME}',interface='{PROPERTIES_INTERFACE}',"
    f"member='PropertiesChanged',path_namespace='{MANAGER_PATH}'",
    f"type='signal',sender='{BUS_NAME}',interface='{OBJECT_MANAGER_INTERFACE}',"
    f"path='{MANAGER_PATH}'",
    "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
    f"member='NameOwnerChanged',arg0='{BUS_NAME}'",
)


class MonitorState:
    """What the monitor shows, kept up to date from signals (no bus here)."""

    def __init__(self) -> None:
        self.manager: dict[str, Any] = {}
        self.host: dict[str, Any] = {}
        self.guests: dict[str, dict[str, Any]] = {}
        self.running = True

    def load(self, manager: dict[str, Any], host: dict[str, Any],
             objects: dict[str, dict[str, dict[str, Any]]]) -> None:
        self.manager, self.host = dict(manager), dict(host)
        self.guests = {p: dict(props) for p, props in guests_of(objects).items()}
        self.running = True

    def properties_changed(self, path: str, interface: str, changed: dict[str, Any],
                           invalidated: list[str]) -> bool:
        """Apply one PropertiesChanged; False if the object is unknown here
        (or properties were only invalidated) and must be fetched."""
        target = self._target(path, interface)
        if target is None:
            return False
        target.update(unwrap(changed))
        for name in invalidated:
            target.pop(name, None)
        return not invalidated

    def _target(self, path: str, interface: str) -> dict[str, Any] | None:
        if path == MANAGER_PATH and interface == MANAGER_INTERFACE:
            return self.manager
        if path == HOST_PATH and interface == HOST_INTERFACE:
            return self.host
        if interface == GUEST_INTERFACE:
            return self.guests.get(path)
        return None

    def replace(self, path: str, interface: str, props: dict[str, Any]) -> None:
        """Every property of one object, freshly fetched."""
        if path == MANAGER_PATH and interface == MANAGER_INTERFACE:
            self.manager = dict(props)
        elif path == HOST_PATH and interface == HOST_INTERFACE:
            self.host = dict(props)
        elif interface == GUEST_INTERFACE:
            self.guests[path] = dict(props)

    def interfaces_added(self, path: str, interfaces: dict[str, dict[str, Any]]) -> bool:
        if GUEST_INTERFACE not in interfaces:
            return False
        self.guests[path] = dict(unwrap(interfaces[GUEST_INTERFACE]))
        return True

    def interfaces_removed(self, path: str, interfaces: list[str]) -> bool:
        if GUEST_INTERFACE not in interfaces:
            return False
        return self.guests.pop(path, None) is not None

    def lines(self, now: float | None = None) -> list[str]:
        stamp = time.strftime("%H:%M:%S", time.localtime(now))
        if not self.running:
            return [f"momctl monitor  {stamp}", "",
                    f"momd is not running ({BUS_NAME} has left the bus); waiting for it"]
        manager = dict(self.manager, GuestCount=len(self.guests))
        return [f"momctl monitor  {stamp}", "", *status_lines(manager, self.host, now), "",
                *guest_table(self.guests)]


class Monitor:
    def __init__(self, client: MomClient, out: TextIO, *, interval: float,
                 tty: bool) -> None:
        self.client = client
        self.out = out
        self.interval = max(interval, 0.05)
        self.tty = tty
        self.state = MonitorState()
        self.dirty = asyncio.Event()
        self.stop = asyncio.Event()
        self.owner: str | None = None
        self.tasks: set[asyncio.Task] = set()
        self.frames = 0

    async def snapshot(self) -> None:
        manager = await self.client.get_all(MANAGER_PATH, MANAGER_INTERFACE)
        host = await self.client.get_all(HOST_PATH, HOST_INTERFACE)
        objects = await self.client.managed_objects()
        self.state.load(manager, host, objects)
        self.dirty.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved; a failed refetch is mended by the next signal

    async def _refetch(self, path: str, interface: str) -> None:
        with contextlib.suppress(MomctlError):
            self.state.replace(path, interface, await self.client.get_all(path, interface))
            self.dirty.set()

    async def _resnapshot(self) -> None:
        with contextlib.suppress(MomctlError):
            await self.snapshot()

    def on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return None
        if msg.interface == "org.freedesktop.DBus" and msg.member == "NameOwnerChanged":
            name, _, new = msg.body
            if name == BUS_NAME:
                self.owner = new or None
                if new:
                    self._spawn(self._resnapshot())
                else:
                    self.state.running = False
                    self.dirty.set()
            return None
        if self.owner is not None and msg.sender != self.owner:
            return None
        if msg.member == "PropertiesChanged" and msg.interface == PROPERTIES_INTERFACE:
            interface, changed, invalidated = msg.body
            if not self.state.properties_changed(msg.path, interface, changed, invalidated):
                if interface in (MANAGER_INTERFACE, HOST_INTERFACE, GUEST_INTERFACE):
                    self._spawn(self._refetch(msg.path, interface))
            self.dirty.set()
        elif msg.interface == OBJECT_MANAGER_INTERFACE and msg.path == MANAGER_PATH:
            if msg.member == "InterfacesAdded":
                path, interfaces = msg.body
                if self.state.interfaces_added(path, interfaces):
                    self.dirty.set()
            elif msg.member == "InterfacesRemoved":
                path, interfaces = msg.body
                if self.state.interfaces_removed(path, interfaces):
                    self.dirty.set()
        return None

    def draw(self) -> None:
        lines = self.state.lines(time.time())
        if self.tty:
            self.out.write(CLEAR + "\n".join(lines) + "\n\n(Ctrl-C to quit)\n")
        else:
            if self.frames:
                self.out.write("\n")
            self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self.frames += 1

    async def redraw_loop(self) -> None:
        while True:
            if self.tty:
                # Refresh once a second anyway: ages ("3 s ago") move on.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.dirty.wait(), 1.0)
            else:
                await self.dirty.wait()
            self.dirty.clear()
            self.draw()
            await asyncio.sleep(self.interval)

    async def run(self, seconds: float | None) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop.set)
        try:
            # Subscribe first, then take the snapshot: no change falls between.
            self.client.bus.add_message_handler(self.on_message)
            for rule in MATCH_RULES:
                await self.client.add_match(rule)
            await self.snapshot()
            self.owner = await self.client.name_owner()
            redraw = asyncio.ensure_future(self.redraw_loop())
            disconnected = asyncio.ensure_future(self.client.bus.wait_for_disconnect())
            stopped = asyncio.ensure_future(self.stop.wait())
            try:
                done, _ = await asyncio.wait({redraw, disconnected, stopped}, timeout=seconds,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (redraw, disconnected, stopped, *self.tasks):
                    task.cancel()
                await asyncio.gather(redraw, disconnected, stopped, *self.tasks,
                                     return_exceptions=True)
            if redraw in done and redraw.exception() is not None:
                raise redraw.exception()  # type: ignore[misc]
            if disconnected in done:
                raise MomctlError("lost the connection to the bus", exitcodes.NOT_RUNNING)
            if self.dirty.is_set() or self.frames == 0:
                self.draw()  # the last change, not yet shown
            return exitcodes.OK
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)


def run_monitor(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.seconds is not None and args.seconds < 0:
        raise UsageError("--seconds must not be negative")
    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    tty = bool(getattr(out, "isatty", lambda: False)())

    async def body(client: MomClient) -> int:
        return await Monitor(client, out, interval=args.interval, tty=tty).run(args.seconds)
    return run_with_client(args, body)


def add_monitor_command(commands: argparse._SubParsersAction) -> None:
    """``momctl monitor``."""
    p = commands.add_parser("monitor", parents=[bus_options()],
                            help="a live table of the host and the guests")
    p.add_argument("--seconds", type=float, default=None, metavar="N",
                   help="stop after N seconds (default: until Ctrl-C)")
    p.add_argument("--interval", type=float, default=0.25, metavar="S",
                   help="redraw at most every S seconds (default 0.25)")
    p.set_defaults(run=run_monitor)
