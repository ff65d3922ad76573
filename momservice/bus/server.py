"""Puts momd on the system bus as org.ovirt.mom1."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from dbus_next import BusType, DBusError, RequestNameReply
from dbus_next.constants import NameFlag

from .connection import MomMessageBus
from ..contract import BUS_NAME
from .polkit import PolkitAuthorizer
from .publisher import BusPublisher

if TYPE_CHECKING:
    from ..service import Service

log = logging.getLogger(__name__)


class BusNameTaken(RuntimeError):
    """Another process owns org.ovirt.mom1 (or the bus policy forbids owning it)."""


class BusServer:
    """The D-Bus window of a running Service: connection, objects and bus name."""

    def __init__(self, service: "Service", address: str | None = None) -> None:
        self.service = service
        self.address = address
        self.bus: MomMessageBus | None = None
        self.publisher: BusPublisher | None = None

    async def start(self) -> None:
        """Connect, export the objects, then take the name (which answers activation).

        Without a system bus (a bare container, a test) the core runs on,
        without its window: logged, not raised.  Owning the name is another
        matter: BusNameTaken, which ends momd.
        """
        try:
            self.bus = await MomMessageBus(bus_address=self.address,
                                           bus_type=BusType.SYSTEM).connect()
        except (OSError, EOFError) as e:
            log.warning("no D-Bus system bus (%s): running without the bus interface", e)
            self.bus = None
            return
        self.publisher = BusPublisher(self.bus, self.service, PolkitAuthorizer(self.bus))
        self.publisher.export_all()
        self.service.engine.observers.append(self.publisher)
        try:
            reply = await self.bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
        except DBusError as e:  # the bus policy: only root may own the name
            await self.stop()
            raise BusNameTaken(f"cannot own {BUS_NAME}: {e.text}") from None
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            await self.stop()
            raise BusNameTaken(f"{BUS_NAME} is already owned by another process")
        log.info("on the bus as %s", BUS_NAME)

    async def stop(self) -> None:
        if self.publisher is not None:
            if self.publisher in self.service.engine.observers:
                self.service.engine.observers.remove(self.publisher)
            self.publisher.close()
            self.publisher = None
        if self.bus is not None:
            self.bus.disconnect()
            try:
                await self.bus.wait_for_disconnect()
            except Exception:  # a closed connection may end with an error: we are leaving
                pass
            self.bus = None
