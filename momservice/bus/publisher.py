"""Keeps the bus objects in step with the engine, as an engine observer."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from dbus_next.aio import MessageBus

from ..engine.core import EngineObserver, Evaluation
from .interfaces import GuestInterface, HostInterface, ManagerInterface, applied_controls
from ..contract import HOST_PATH, MANAGER_PATH, guest_path

if TYPE_CHECKING:
    from ..service import Service

log = logging.getLogger(__name__)

#: Guest objects published before the event loop gets a turn.
_PUBLISH_SLICE = 50


class BusPublisher(EngineObserver):
    """Exports the manager, the host and one object per guest, and publishes changes.

    After each collection every object emits at most one PropertiesChanged
    with only what changed; guests appear and disappear with the
    ObjectManager signals as soon as the engine hears of them.
    """

    def __init__(self, bus: MessageBus, service: "Service", authorizer: Any) -> None:
        self.bus = bus
        self.service = service
        self.authorizer = authorizer
        self.manager = ManagerInterface(service, authorizer)
        self.host = HostInterface(service, authorizer)
        self.guests: dict[str, GuestInterface] = {}
        self._publishing: asyncio.Future | None = None
        self._publish_again = False

    def export_all(self) -> None:
        for path, interface in ((MANAGER_PATH, self.manager), (HOST_PATH, self.host)):
            interface.mark_published()
            self.bus.export(path, interface)
        for uuid in list(self.service.engine.guests):
            self.guest_added(uuid)

    def close(self) -> None:
        """Stop publishing (the connection is about to close)."""
        if self._publishing is not None:
            self._publishing.cancel()

    # -- engine observer -----------------------------------------------------

    def guest_added(self, uuid: str) -> None:
        if uuid in self.guests or uuid not in self.service.engine.guests:
            return
        guest = self.guests[uuid] = GuestInterface(self.service, self.authorizer, uuid)
        guest.mark_published()
        self.bus.export(guest_path(uuid), guest)
        self.manager.publish_changes()

    def guest_removed(self, uuid: str) -> None:
        if self.guests.pop(uuid, None) is not None:
            self.bus.unexport(guest_path(uuid))
            self.manager.publish_changes()

    def host_sampled(self) -> None:
        self.host.publish_changes()

    def guests_sampled(self) -> None:
        if self._publishing is not None and not self._publishing.done():
            self._publish_again = True
            return
        self._publishing = asyncio.ensure_future(self._publish_guests())

    async def _publish_guests(self) -> None:
        # A thousand signals take tens of milliseconds to marshal: send them
        # in slices, so that calls from clients are answered in between.
        while True:
            self._publish_again = False
            for count, guest in enumerate(list(self.guests.values()), 1):
                guest.publish_changes()
                if count % _PUBLISH_SLICE == 0:
                    await self.bus.drained()
            self.manager.publish_changes()
            if not self._publish_again:
                return

    def connection_changed(self, connected: bool) -> None:
        self.manager.publish_changes()

    def evaluated(self, evaluation: Evaluation) -> None:
        for uuid, kib in evaluation.applied_balloons.items():
            if uuid in self.guests:
                self.guests[uuid].balloon_target = kib
        # Only the manager now: the host's and the guests' new Controls and
        # BalloonTarget go out with their next sample, so that each object
        # sends at most one PropertiesChanged per cycle.
        self.manager.publish_changes()
        if evaluation.result.error is not None:
            self.manager.PolicyFailed(str(evaluation.result.error))
        if evaluation.changed:
            self.manager.ControlsApplied(applied_controls(evaluation))
