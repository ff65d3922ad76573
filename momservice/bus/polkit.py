"""Asking polkit whether the caller of a method may do what it asks."""

from __future__ import annotations

import asyncio
import logging

from dbus_next import DBusError, Message, MessageFlag, MessageType, Variant
from dbus_next.aio import MessageBus

from ..contract import ACCESS_DENIED, INTERACTIVE_AUTHORIZATION_REQUIRED

log = logging.getLogger(__name__)

POLKIT_NAME = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"
POLKIT_INTERFACE = "org.freedesktop.PolicyKit1.Authority"
_ALLOW_USER_INTERACTION = 1  # CheckAuthorizationFlags
# polkit is simply not there (no such name, nothing to activate).
_ABSENT = frozenset({"org.freedesktop.DBus.Error.ServiceUnknown",
                     "org.freedesktop.DBus.Error.NameHasNoOwner"})


class PolkitAuthorizer:
    """Checks each mutating call with polkit's CheckAuthorization.

    The subject is the caller's unique bus name; interaction (a password
    prompt through the caller's agent) is allowed only when the call carries
    the allow-interactive-authorization flag.  Without polkit on the bus
    only root may change anything, which is logged once.
    """

    def __init__(self, bus: MessageBus, *, timeout: float = 25.0,
                 interactive_timeout: float = 120.0) -> None:
        self.bus = bus
        self.timeout = timeout
        self.interactive_timeout = interactive_timeout
        self._told_absent = False

    async def check(self, message: Message | None, action: str) -> None:
        """Return when allowed; raise the contract's DBusError otherwise."""
        if message is None or not message.sender:
            raise DBusError(ACCESS_DENIED, "the caller could not be identified")
        interactive = bool(message.flags & MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION)
        request = Message(
            destination=POLKIT_NAME, path=POLKIT_PATH, interface=POLKIT_INTERFACE,
            member="CheckAuthorization", signature="(sa{sv})sa{ss}us",
            body=[["system-bus-name", {"name": Variant("s", message.sender)}], action, {},
                  _ALLOW_USER_INTERACTION if interactive else 0, ""],
            flags=(MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION if interactive
                   else MessageFlag.NONE))
        try:
            reply = await asyncio.wait_for(
                self.bus.call(request),
                self.interactive_timeout if interactive else self.timeout)
        except asyncio.TimeoutError:
            log.warning("polkit did not answer about %s for %s in time", action, message.sender)
            raise DBusError(ACCESS_DENIED, "authorization timed out") from None
        if reply.message_type == MessageType.ERROR:
            if reply.error_name in _ABSENT:
                await self._root_only(message.sender, action)
                return
            log.warning("polkit refused to check %s: %s %s", action, reply.error_name, reply.body)
            raise DBusError(ACCESS_DENIED, f"authorization check failed: {reply.error_name}")
        authorized, challenge, _details = reply.body[0]
        if authorized:
            return
        if challenge and not interactive:
            raise DBusError(INTERACTIVE_AUTHORIZATION_REQUIRED,
                            f"{action} needs authentication: call with interactive "
                            "authorization allowed (and a polkit agent running)")
        raise DBusError(ACCESS_DENIED, f"not authorized for {action}")

    async def _root_only(self, sender: str, action: str) -> None:
        if not self._told_absent:
            self._told_absent = True
            log.warning("polkit is not on the bus: only root may change anything")
        reply = await self.bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="GetConnectionUnixUser",
            signature="s", body=[sender]))
        if reply.message_type == MessageType.ERROR or reply.body[0] != 0:
            raise DBusError(ACCESS_DENIED, f"not authorized for {action} "
                                           "(polkit is not running: root only)")
