"""The bus layer's own guarantees, on a private bus with a small test interface.

No momd here: a ``MomInterface`` made for the test is exported on a
``MomMessageBus``, to show that authorization is declared structurally,
that whatever a member raises reaches the caller as a named error without
a traceback, and that calls know their caller.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from dbus_next import BusType, DBusError, Message, MessageType, Variant
from dbus_next.aio import MessageBus
from dbus_next.service import dbus_property, method

from momservice.bus import errors
from momservice.bus.access import MomInterface, current_message, public, requires
from momservice.bus.connection import MomMessageBus
from momservice import contract
from momservice.contract import BUS_NAME, PROPERTIES_INTERFACE
from momservice.errors import Failed, InvalidArgument, NotFound
from momservice.hypervisor import HypervisorError
from momservice.policy import PolicyError, PolicyTrialError
from tests.helpers.private_bus import PrivateSystemBus, skip_reason

#: A test interface under our bus name.
PROBE = f"{BUS_NAME}.Probe"


def test_an_exported_method_without_declared_access_is_refused() -> None:
    with pytest.raises(TypeError, match="@requires"):
        class Careless(MomInterface):
            @method()
            async def Forget(self) -> "s":
                return "no check"


def test_a_writable_property_needs_an_action() -> None:
    with pytest.raises(TypeError, match="setter"):
        class Careless(MomInterface):
            @dbus_property()
            def Knob(self) -> "s":
                return ""

            @Knob.setter
            @public
            def Knob(self, value: "s"):
                pass


@pytest.mark.parametrize("raised, name", [
    (PolicyError("bad", 3), contract.POLICY_SYNTAX),
    (PolicyTrialError(PolicyError("failed", 2)), contract.POLICY_FAILED),
    (InvalidArgument("out of range"), contract.INVALID_ARGUMENT),
    (NotFound("no guest x"), contract.NOT_FOUND),
    (Failed("refused"), contract.FAILED),
    (HypervisorError("refused"), contract.FAILED),
    # Not the core's errors: bugs, whatever their built-in type.
    (ValueError("out of range"), contract.FAILED),
    (KeyError("no guest x"), contract.FAILED),
    (TypeError("a bug"), contract.FAILED),
    (OSError(13, "Permission denied"), contract.FAILED),
    (RuntimeError("a bug"), contract.FAILED),
])
def test_every_exception_maps_to_a_contract_error(raised, name) -> None:
    error = errors.to_dbus_error(raised)
    assert error.type == name
    assert "Traceback" not in error.text


class Allow:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def check(self, message: Message | None, action: str) -> None:
        self.seen.append((message.sender if message else "", action))
        if action == "deny":
            raise DBusError(contract.ACCESS_DENIED, "no")


class Probe(MomInterface):
    """A test interface."""

    @method()
    @public
    def Boom(self) -> "s":
        raise RuntimeError("internal detail that must not leak")

    @method()
    @public
    def Caller(self) -> "s":
        return current_message.get().sender

    @method()
    @requires("allow")
    def Change(self) -> "s":
        return "changed"

    @method()
    @requires("deny")
    def Forbidden(self) -> "s":
        return "should not run"

    @dbus_property()
    def Broken(self) -> "s":
        raise RuntimeError("getter failed")

    @Broken.setter
    @requires("allow")
    def Broken(self, value: "s"):
        raise InvalidArgument("no such value")


def test_replies_carry_named_errors_and_know_the_caller(tmp_path: Path) -> None:
    reason = skip_reason(polkit=False)
    if reason:
        pytest.skip(reason)
    authorizer = Allow()

    async def body(address: str) -> dict:
        server = await MomMessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
        server.export("/probe", Probe(PROBE, authorizer))
        # Our bus policy lets anyone send to org.ovirt.mom1, and only root own it.
        await server.request_name(BUS_NAME)
        client = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()

        async def call(interface: str, member: str, signature: str = "",
                       body: list | None = None) -> Message:
            return await client.call(Message(destination=BUS_NAME, path="/probe",
                                             interface=interface, member=member,
                                             signature=signature, body=body or []))
        replies = {
            "boom": await call(PROBE, "Boom"),
            "caller": await call(PROBE, "Caller"),
            "change": await call(PROBE, "Change"),
            "forbidden": await call(PROBE, "Forbidden"),
            "get": await call(PROPERTIES_INTERFACE, "Get", "ss",
                              [PROBE, "Broken"]),
            "set": await call(PROPERTIES_INTERFACE, "Set", "ssv",
                              [PROBE, "Broken",
                               Variant("s", "x")]),
            "set_wrong_type": await call(PROPERTIES_INTERFACE, "Set", "ssv",
                                         [PROBE, "Broken", Variant("i", 1)]),
        }
        replies["client"] = client.unique_name
        client.disconnect()
        server.disconnect()
        return replies

    with PrivateSystemBus(tmp_path) as bus:
        replies = asyncio.run(body(bus.address))
    for key in ("boom", "get", "set", "set_wrong_type", "forbidden"):
        reply = replies[key]
        assert reply.message_type == MessageType.ERROR, key
        assert "Traceback" not in str(reply.body) and "File \"" not in str(reply.body), reply.body
    assert replies["boom"].error_name == contract.FAILED
    assert "internal detail" not in str(replies["boom"].body)
    assert replies["get"].error_name == contract.FAILED
    assert replies["set"].error_name == contract.INVALID_ARGUMENT
    # A value of the wrong type never reaches the setter: the standard error.
    assert replies["set_wrong_type"].error_name == "org.freedesktop.DBus.Error.InvalidArgs"
    assert replies["forbidden"].error_name == contract.ACCESS_DENIED
    assert replies["caller"].body == [replies["client"]]
    assert replies["change"].body == ["changed"]
    # The authorizer saw the real caller for each guarded call.
    assert (replies["client"], "allow") in authorizer.seen
    assert (replies["client"], "deny") in authorizer.seen
