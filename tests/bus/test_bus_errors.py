"""The core's errors on a real bus: each one travels under its name; anything
else is a bug, which the caller sees as Failed "internal error" and the log
keeps with its traceback.

A private dbus-daemon configured like the system bus (with our bus policy)
and polkitd, as in the other bus tests; the service runs in this process, on
the simulator (``sim://``: no libvirt connection in the test process, whose
event-loop binding would outlive the test), so that a test can plant a bug
in one operation: the one fake here, since no real input provokes a bug on
purpose.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest
from dbus_next import BusType, Message, MessageType
from dbus_next.aio import MessageBus

from momservice.assembly import attach_bus, build_service
from momservice.bus import errors
from momservice.contract import BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH
from momservice.config import Config
from momservice.errors import Failed, InvalidArgument
from tests.helpers.private_bus import skip_reason

POLICIES = Path(__file__).resolve().parents[2] / "policies"

_reason = skip_reason()
pytestmark = [pytest.mark.skipif(_reason is not None, reason=_reason or ""),
              pytest.mark.timeout(180)]


def _calls(system, tmp_path: Path, planted: dict | None = None) -> dict[str, Message]:
    """GetPolicy of a shipped policy, of a missing one and of one whose
    operation raises what ``planted`` says, over the bus."""
    config = dataclasses.replace(Config.defaults(), state_dir=tmp_path / "state",
                                 policy_dir=POLICIES,
                                 hypervisor_uri="sim:///?guests=2&host_mib=4096")
    service = build_service(config)
    attach_bus(service, system.address)

    def text(name: str) -> str:
        if planted and name in planted:
            raise planted[name]
        return real_text(name)
    real_text = service.library.text
    service.library.text = text  # type: ignore[method-assign]

    async def body() -> dict[str, Message]:
        await service.start()
        client = await MessageBus(bus_address=system.address, bus_type=BusType.SYSTEM).connect()
        try:
            replies = {}
            for name in ["02-balloon", "no-such-policy", *(planted or {})]:
                replies[name] = await client.call(Message(
                    destination=BUS_NAME, path=MANAGER_PATH, interface=MANAGER_INTERFACE,
                    member="GetPolicy", signature="s", body=[name]))
            return replies
        finally:
            client.disconnect()
            await service.stop()
    return asyncio.run(asyncio.wait_for(body(), 120))


def test_a_stray_error_reaches_the_caller_as_internal_error_with_the_traceback_logged(
        system, tmp_path, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="momservice.bus")
    planted = {"stray-key": KeyError("a bug's key"), "stray-value": ValueError("a bug's value"),
               "stray-type": TypeError("a bug's type")}
    replies = _calls(system, tmp_path, planted)
    assert replies["02-balloon"].message_type == MessageType.METHOD_RETURN
    assert replies["no-such-policy"].error_name == errors.NOT_FOUND   # the core's NotFound
    for name, raised in planted.items():
        reply = replies[name]
        assert reply.message_type == MessageType.ERROR, name
        assert reply.error_name == errors.FAILED, (name, reply.error_name)
        text = reply.body[0]
        assert text.startswith("internal error") and "Traceback" not in text, text
        assert str(raised.args[0]) not in text  # a bug's details stay in the log
    logged = [r for r in caplog.records if r.exc_info and "internal error" in r.getMessage()]
    assert [type(r.exc_info[1]) for r in logged] == [KeyError, ValueError, TypeError]
    for record in logged:
        assert "Traceback" in caplog.text and "in text" in \
            logging.Formatter().formatException(record.exc_info)  # where it was raised


def test_the_cores_own_errors_travel_under_their_names(system, tmp_path, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="momservice.bus")
    planted = {"invalid": InvalidArgument("no such value"), "failed": Failed("disk full")}
    replies = _calls(system, tmp_path, planted)
    assert replies["invalid"].error_name == errors.INVALID_ARGUMENT
    assert replies["invalid"].body == ["no such value"]
    assert replies["failed"].error_name == errors.FAILED
    assert replies["failed"].body == ["disk full"]
    assert not [r for r in caplog.records if r.exc_info]  # refusals, not bugs: no traceback
