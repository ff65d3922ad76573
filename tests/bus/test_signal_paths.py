"""Signals leave from the path their object is exported at, after much churn.

MomMessageBus keeps each exported interface's paths in a table updated at
export and unexport instead of scanning every export per signal (as
dbus-next does).  Here many objects are exported on a real private
dbus-daemon, some unexported in each of the ways dbus-next allows (the
whole path, by interface name, by instance), some exported again
elsewhere; every object still exported then signals, and a client checks
each signal's path, interface and member, and that none comes from an
object no longer exported.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from dbus_next import BusType, Message, MessageType, PropertyAccess
from dbus_next.aio import MessageBus
from dbus_next.service import ServiceInterface, dbus_property, signal

from momservice.bus.connection import MomMessageBus
from momservice.contract import BUS_NAME, PROPERTIES_INTERFACE
from tests.helpers.private_bus import PrivateSystemBus, skip_reason

PING = f"{BUS_NAME}.TestPing"
OTHER = f"{BUS_NAME}.TestOther"
COUNT = 300


class Pinger(ServiceInterface):
    """A test object that signals its own number."""

    def __init__(self, name: str, number: int) -> None:
        super().__init__(name)
        self.number = number

    @signal()
    def Ping(self) -> "u":  # noqa: F821 (dbus-next signature)
        return self.number

    @dbus_property(access=PropertyAccess.READ)
    def Number(self) -> "u":  # noqa: F821
        return self.number


def _churn(server: MomMessageBus) -> tuple[dict[str, list[Pinger]], list[Pinger]]:
    """Export, unexport and re-export; the exported set, and the ones gone."""
    pings = [Pinger(PING, i) for i in range(COUNT)]
    others = [Pinger(OTHER, COUNT + i) for i in range(COUNT)]
    for i in range(COUNT):
        server.export(f"/test/o{i}", pings[i])
        server.export(f"/test/o{i}", others[i])
    gone: list[Pinger] = []
    for i in range(0, COUNT, 5):       # the whole path
        server.unexport(f"/test/o{i}")
        gone += [pings[i], others[i]]
    for i in range(1, COUNT, 5):       # one interface, by name
        server.unexport(f"/test/o{i}", OTHER)
        gone.append(others[i])
    for i in range(2, COUNT, 5):       # one interface, by instance
        server.unexport(f"/test/o{i}", pings[i])
        gone.append(pings[i])
    for i in range(0, COUNT, 10):      # back, at another path
        server.export(f"/test/again{i}", pings[i])
        gone.remove(pings[i])
    # One object at two paths at once, then at one again.
    server.export("/test/twice", pings[3])
    server.export("/test/twice2", pings[4])
    server.unexport("/test/twice2")
    exported: dict[str, list[Pinger]] = {}
    for path, interfaces in server._path_exports.items():
        exported[path] = list(interfaces)
    return exported, gone


def test_signals_carry_the_exporting_path_after_export_and_unexport(tmp_path: Path) -> None:
    reason = skip_reason(polkit=False)
    if reason:
        pytest.skip(reason)

    async def body(address: str):
        server = await MomMessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
        await server.request_name(BUS_NAME)
        client = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
        received: list[tuple[str, str, str, object]] = []
        done = asyncio.get_running_loop().create_future()

        def on_message(m: Message) -> None:
            if m.message_type != MessageType.SIGNAL or m.sender == "org.freedesktop.DBus":
                return
            if m.member == "Ping" and m.path == "/test/end":
                if not done.done():
                    done.set_result(None)
            elif m.member in ("Ping", "PropertiesChanged"):
                received.append((m.path, m.interface, m.member, m.body[0]))

        client.add_message_handler(on_message)
        await client.call(Message(destination="org.freedesktop.DBus",
                                  path="/org/freedesktop/DBus", interface="org.freedesktop.DBus",
                                  member="AddMatch", signature="s",
                                  body=["type='signal',path_namespace='/test'"]))
        exported, gone = _churn(server)
        for interfaces in exported.values():
            for iface in interfaces:
                iface.Ping()
                iface.emit_properties_changed({"Number": iface.number})
        for iface in gone:  # no longer on the bus: dbus-next sends nothing
            iface.Ping()
            iface.emit_properties_changed({"Number": iface.number})
        end = Pinger(PING, 0)
        server.export("/test/end", end)
        end.Ping()
        await asyncio.wait_for(done, 30)
        client.disconnect()
        server.disconnect()
        return exported, received, gone

    with PrivateSystemBus(tmp_path) as bus:
        exported, received, gone = asyncio.run(body(bus.address))

    # Each exported interface signals from each path it is exported at.
    paths_of: dict[int, list[str]] = {}
    for path, interfaces in exported.items():
        for iface in interfaces:
            paths_of.setdefault(id(iface), []).append(path)
    expected = []
    for path, interfaces in exported.items():
        for iface in interfaces:
            for p in paths_of[id(iface)]:
                expected.append((p, iface.name, "Ping", iface.number))
                expected.append((p, PROPERTIES_INTERFACE, "PropertiesChanged", iface.name))
    assert sorted(received) == sorted(expected)
    assert len(expected) > COUNT  # the churn left plenty exported
    # The shared object signalled from both of its paths, the unshared one from one.
    assert ("/test/twice", PING, "Ping", 3) in received
    assert ("/test/o3", PING, "Ping", 3) in received
    assert not any(p == "/test/twice2" for p, *_ in received)
    assert ("/test/o4", PING, "Ping", 4) in received
    assert ("/test/again10", PING, "Ping", 10) in received
    assert not any(p == "/test/o10" for p, *_ in received)
    assert gone and not {iface.number for iface in gone} & {
        number for _, interface, member, number in received if member == "Ping"}
