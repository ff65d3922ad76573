"""A HypervisorListener that records what it hears, and bounded waiting."""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from momservice.hypervisor.base import GuestInfo


class RecordingListener:
    """Records every call, in order, as ``(kind, argument)``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.added: dict[str, GuestInfo] = {}
        self.removed: list[str] = []
        self.connection: list[bool] = []

    def guest_added(self, info: GuestInfo) -> None:
        self.events.append(("added", info))
        self.added[info.uuid] = info

    def guest_removed(self, uuid: str) -> None:
        self.events.append(("removed", uuid))
        self.removed.append(uuid)

    def connection_changed(self, connected: bool) -> None:
        self.events.append(("connection", connected))
        self.connection.append(connected)

    def guest_changed(self, info: GuestInfo) -> None:
        self.events.append(("changed", info))

    def present(self) -> set[str]:
        """UUIDs added and not removed since, replaying the calls in order."""
        uuids: set[str] = set()
        for kind, arg in self.events:
            if kind == "added":
                uuids.add(arg.uuid)  # type: ignore[union-attr]
            elif kind == "removed":
                uuids.discard(arg)  # type: ignore[arg-type]
        return uuids


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0,
                   what: str = "condition") -> None:
    """Poll ``predicate`` on the running loop; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
