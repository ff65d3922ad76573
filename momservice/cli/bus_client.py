"""A small client of org.ovirt.mom1 (see docs/dbus-api.md) for momctl.

Low-level ``bus.call(Message(...))`` with explicit signatures, no proxy
introspection.  Every failure an administrator can cause or meet (no bus,
momd not running, polkit said no, no such guest, a value refused) becomes a
``MomctlError`` carrying a human message and the exit code of
``exitcodes``; nothing here lets a D-Bus or socket exception escape.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from dbus_next import BusType, DBusError, Message, MessageFlag, MessageType, Variant
from dbus_next.aio import MessageBus
from dbus_next.errors import AuthError, InvalidAddressError

from ..bus.connection import wait_when_full
from ..contract import (BUS_NAME, FAILED, GUEST_INTERFACE, INTERACTIVE_AUTHORIZATION_REQUIRED,
                        MANAGER_PATH, OBJECT_MANAGER_INTERFACE, POLICY_SYNTAX,
                        PROPERTIES_INTERFACE, guest_path)
from . import exitcodes

#: How long a read may take before momctl gives up (seconds).
READ_TIMEOUT = 30.0
#: Mutating calls may wait for a polkit agent to ask for a password.
WRITE_TIMEOUT = 300.0

_ACCESS_HINT = ("run momctl as root, or from a session with a polkit authentication "
                "agent that can ask for a password")


class MomctlError(Exception):
    """An expected failure: ``str(error)`` is shown, ``code`` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def system_bus_address() -> str:
    """Where dbus-next looks for the system bus (for messages)."""
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS",
                          "unix:path=/var/run/dbus/system_bus_socket")


def describe_dbus_error(name: str, text: str) -> MomctlError:
    """The human message and exit code for a D-Bus error reply."""
    code = exitcodes.for_dbus_error(name)
    text = (text or "").strip()
    short = name.rsplit(".", 1)[-1]
    if code == exitcodes.NOT_RUNNING:
        message = f"momd is not running ({BUS_NAME} is not on the bus: {short})"
        if name.startswith("org.freedesktop.DBus.Error.Spawn."):
            message = f"momd could not be started by the bus ({short}): {text}"
    elif code == exitcodes.ACCESS_DENIED:
        reason = ("authorization needs a password and no agent could ask for it"
                  if name == INTERACTIVE_AUTHORIZATION_REQUIRED else "access denied")
        message = f"{reason}: {text}; {_ACCESS_HINT}" if text else f"{reason}; {_ACCESS_HINT}"
    elif name == POLICY_SYNTAX:
        message = f"policy error: {text}"
    elif code == exitcodes.INVALID_ARGUMENT:
        message = f"invalid argument: {text}"
    elif code == exitcodes.NOT_FOUND:
        message = f"not found: {text}"
    elif name == FAILED:
        message = f"failed: {text}"
    else:
        message = f"{name}: {text}" if text else name
    return MomctlError(message, code)


def unwrap(value: Any) -> Any:
    """A D-Bus value with every ``Variant`` replaced by what it holds."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [unwrap(v) for v in value]
    return value


class MomClient:
    """One connection to the bus, talking to momd."""

    def __init__(self, bus: MessageBus, address: str) -> None:
        self.bus = bus
        self.address = address

    @classmethod
    async def connect(cls, address: str | None = None) -> "MomClient":
        """Connect to ``address``, or the system bus (``DBUS_SYSTEM_BUS_ADDRESS``)."""
        shown = address or f"the system bus ({system_bus_address()})"
        try:
            bus = MessageBus(bus_address=address or None, bus_type=BusType.SYSTEM)
            # A bus busy with momd's signals reads slowly: a burst of calls
            # (monitor, guests) fills the socket, which is a wait, not an end.
            wait_when_full(bus)
            await asyncio.wait_for(bus.connect(), READ_TIMEOUT)
        except InvalidAddressError as e:
            raise MomctlError(f"bad bus address {address!r}: {e}",
                              exitcodes.INVALID_ARGUMENT) from None
        except AuthError as e:
            raise MomctlError(f"the bus refused us ({shown}): {e}",
                              exitcodes.ACCESS_DENIED) from None
        except PermissionError as e:
            raise MomctlError(f"cannot connect to {shown}: {e.strerror or e}",
                              exitcodes.ACCESS_DENIED) from None
        except asyncio.TimeoutError:
            raise MomctlError(f"cannot connect to {shown}: no answer within "
                              f"{READ_TIMEOUT:g} s", exitcodes.NOT_RUNNING) from None
        except (OSError, EOFError, ValueError) as e:
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise MomctlError(f"cannot connect to {shown}: {reason} "
                              "(is the D-Bus daemon running?)", exitcodes.NOT_RUNNING) from None
        return cls(bus, address or "system")

    def close(self) -> None:
        try:
            self.bus.disconnect()
        except Exception:  # noqa: BLE001 - closing a broken connection is fine
            pass

    async def __aenter__(self) -> "MomClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # -- calls

    async def call(self, path: str, interface: str, member: str, signature: str = "",
                   body: list[Any] | tuple[Any, ...] = (), *, interactive: bool = False,
                   destination: str = BUS_NAME, timeout: float | None = None) -> list[Any]:
        """Call a method; the reply body (Variants kept), or MomctlError.

        ``interactive``: the call changes something, so it carries the
        ALLOW_INTERACTIVE_AUTHORIZATION flag (a polkit agent may ask for a
        password) and may take long.
        """
        flags = MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION if interactive else MessageFlag.NONE
        if timeout is None:
            timeout = WRITE_TIMEOUT if interactive else READ_TIMEOUT
        message = Message(destination=destination, path=path, interface=interface,
                          member=member, signature=signature, body=list(body), flags=flags)
        try:
            reply = await asyncio.wait_for(self.bus.call(message), timeout)
        except asyncio.TimeoutError:
            raise MomctlError(f"no reply from {destination} to {member} within {timeout:g} s",
                              exitcodes.FAILED) from None
        except DBusError as e:
            raise describe_dbus_error(e.type, e.text) from None
        except (OSError, EOFError) as e:
            raise MomctlError(f"lost the connection to the bus during {member}: {e}",
                              exitcodes.NOT_RUNNING) from None
        if reply is None:
            return []
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise describe_dbus_error(reply.error_name or "", text)
        return list(reply.body)

    async def get_all(self, path: str, interface: str) -> dict[str, Any]:
        """Every property of ``interface`` at ``path``, unwrapped."""
        (props,) = await self.call(path, PROPERTIES_INTERFACE, "GetAll", "s", [interface])
        return unwrap(props)

    async def get(self, path: str, interface: str, name: str) -> Any:
        (value,) = await self.call(path, PROPERTIES_INTERFACE, "Get", "ss", [interface, name])
        return unwrap(value)

    async def managed_objects(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``GetManagedObjects`` on the manager: path -> interface -> properties."""
        (objects,) = await self.call(MANAGER_PATH, OBJECT_MANAGER_INTERFACE, "GetManagedObjects")
        return unwrap(objects)

    async def guests(self) -> dict[str, dict[str, Any]]:
        """Guest properties by object path."""
        objects = await self.managed_objects()
        return guests_of(objects)

    async def find_guest(self, key: str) -> tuple[str, dict[str, Any]]:
        """The guest named ``key``, or with UUID ``key``: (path, properties)."""
        return find_guest(await self.guests(), key)

    async def name_owner(self, name: str = BUS_NAME) -> str | None:
        """The unique name owning ``name``, or None."""
        try:
            (owner,) = await self.call("/org/freedesktop/DBus", "org.freedesktop.DBus",
                                       "GetNameOwner", "s", [name],
                                       destination="org.freedesktop.DBus")
        except MomctlError as e:
            if e.code == exitcodes.NOT_RUNNING:
                return None
            raise
        return owner

    async def add_match(self, rule: str) -> None:
        await self.call("/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s",
                        [rule], destination="org.freedesktop.DBus")


def guests_of(objects: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The guests among the managed objects: path -> Guest properties."""
    return {path: ifaces[GUEST_INTERFACE] for path, ifaces in objects.items()
            if GUEST_INTERFACE in ifaces}


def find_guest(guests: dict[str, dict[str, Any]], key: str) -> tuple[str, dict[str, Any]]:
    """Look ``key`` up by name, then UUID (any case), then object path."""
    for path, props in guests.items():
        if props.get("Name") == key:
            return path, props
    lowered = key.lower()
    for path, props in guests.items():
        if str(props.get("UUID", "")).lower() == lowered or path == key \
                or path == guest_path(lowered):
            return path, props
    raise MomctlError(f"no guest named {key!r} (and none with that UUID); "
                      "`momctl guests` lists them", exitcodes.NOT_FOUND)
