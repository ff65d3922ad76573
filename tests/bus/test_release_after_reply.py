"""A GetManagedObjects reply gives its memory back once it is written.

A reply of a thousand objects leaves megabytes free in the middle of the C
heap, which glibc keeps: MomMessageBus calls release_free_memory (glibc's
malloc_trim) after such a reply has left.  Here, on a real private
dbus-daemon, a client asks for the objects of a server that exports a few
hundred; release_free_memory is replaced by a recorder (the trim itself is
glibc's, and what it saves is measured by benchmarks/cycle_bench.py), which
notes whether everything queued had been written when it was called.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from dbus_next import BusType, Message, PropertyAccess
from dbus_next.aio import MessageBus
from dbus_next.service import ServiceInterface, dbus_property

from momservice.bus import connection
from momservice.bus.connection import MomMessageBus
from momservice.contract import BUS_NAME, OBJECT_MANAGER_INTERFACE
from tests.helpers.private_bus import PrivateSystemBus, skip_reason

COUNT = 300


class Item(ServiceInterface):
    """A test object with one property."""

    def __init__(self, number: int) -> None:
        super().__init__(f"{BUS_NAME}.TestItem")
        self.number = number

    @dbus_property(access=PropertyAccess.READ)
    def Number(self) -> "u":  # noqa: F821 (dbus-next signature)
        return self.number


def test_memory_is_released_once_the_reply_is_written(tmp_path: Path, monkeypatch) -> None:
    reason = skip_reason(polkit=False)
    if reason:
        pytest.skip(reason)
    calls: list[bool] = []

    async def body(address: str) -> tuple[int, list[bool]]:
        server = await MomMessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
        await server.request_name(BUS_NAME)
        writer = server._writer
        monkeypatch.setattr(connection, "release_free_memory", lambda: calls.append(
            writer.buf is None and writer.messages.qsize() == 0))
        for i in range(COUNT):
            server.export(f"/org/ovirt/mom1/test/o{i}", Item(i))
        client = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
        reply = await client.call(Message(destination=BUS_NAME, path="/org/ovirt/mom1",
                                          interface=OBJECT_MANAGER_INTERFACE,
                                          member="GetManagedObjects"))
        for _ in range(100):          # the release follows the write, soon after
            if calls:
                break
            await asyncio.sleep(0.05)
        seen = list(calls)
        client.disconnect()
        server.disconnect()
        return len(reply.body[0]), seen

    with PrivateSystemBus(tmp_path) as bus:
        objects, seen = asyncio.run(body(bus.address))
    assert objects == COUNT
    assert seen == [True]   # once, with nothing left to write
