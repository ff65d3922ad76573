"""momd's life on the bus: durable policies across restarts, bus activation.

A private system bus with polkitd; momd on libvirt's test driver (a node
file) as a process, started and stopped by the tests.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from dbus_next import BusType, Message, MessageType
from dbus_next.aio import MessageBus

from momservice.contract import (ACCESS_DENIED, BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH,
                                 PROPERTIES_INTERFACE)
from tests.helpers.libvirt_node import guest_specs, node_uri, write_node_xml
from tests.helpers.momd_process import Momd, momd_config
from tests.helpers.private_bus import mom_service_file, skip_reason, system_bus_with_polkit

_reason = skip_reason()
pytestmark = [pytest.mark.skipif(_reason is not None, reason=_reason or ""),
              pytest.mark.timeout(180)]


def call(address: str, member: str, signature: str = "", body: list | None = None) -> Message:
    async def go() -> Message:
        bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
        try:
            return await bus.call(Message(destination=BUS_NAME, path=MANAGER_PATH,
                                          interface=MANAGER_INTERFACE, member=member,
                                          signature=signature, body=body or []))
        finally:
            bus.disconnect()
    return asyncio.run(go())


def policy_names(address: str) -> list[str]:
    async def go() -> list[str]:
        bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
        try:
            reply = await bus.call(Message(
                destination=BUS_NAME, path=MANAGER_PATH,
                interface=PROPERTIES_INTERFACE, member="Get", signature="ss",
                body=[MANAGER_INTERFACE, "PolicyNames"]))
            return reply.body[0].value
        finally:
            bus.disconnect()
    return asyncio.run(go())


def test_policies_set_over_the_bus_survive_a_restart(tmp_path: Path) -> None:
    node = write_node_xml(tmp_path / "node.xml", guest_specs(2))
    config = momd_config(tmp_path, node_uri(node))
    with system_bus_with_polkit(tmp_path / "bus") as system:
        first = Momd(system, config, tmp_path / "momd.log")
        try:
            reply = call(system.address, "SetPolicy", "ss", ["10-site", "(defvar site 1)\n"])
            assert reply.message_type == MessageType.METHOD_RETURN, reply.body
        finally:
            assert first.stop() == 0
        stored = tmp_path / "state" / "policy.d"
        assert (stored / "10-site.policy").read_text() == "(defvar site 1)\n"
        # A corrupt file and a broken one in the state dir: skipped, named.
        (stored / "11-corrupt.policy").write_bytes(b"(defvar x \xff\xfe)\n")
        (stored / "12-broken.policy").write_text("(defvar y 1)\n(if 1 2)\n")

        second = Momd(system, config, tmp_path / "momd.log")
        try:
            assert policy_names(system.address) == \
                ["00-defines", "02-balloon", "03-ksm", "10-site"]
            reply = call(system.address, "GetPolicy", "s", ["10-site"])
            assert reply.body == ["(defvar site 1)\n"]
        finally:
            second.stop()
        log = second.log_text()
        assert "11-corrupt.policy" in log and "12-broken.policy:2" in log


def test_bus_activation_starts_momd_on_the_first_call(tmp_path: Path) -> None:
    node = write_node_xml(tmp_path / "node.xml", guest_specs(1))
    config = momd_config(tmp_path, node_uri(node))
    momd = Path(sys.executable).with_name("momd")
    assert momd.exists(), "the venv's momd console script"
    service = mom_service_file(f"{momd} -c {config} -l {tmp_path / 'activated.log'}")
    with system_bus_with_polkit(tmp_path / "bus",
                                service_files={"org.ovirt.mom1.service": service}) as system:
        assert not system.bus.name_has_owner(BUS_NAME)
        reply = call(system.address, "GetPolicies")
        assert reply.message_type == MessageType.METHOD_RETURN, reply.body
        assert set(reply.body[0]) == {"00-defines", "02-balloon", "03-ksm"}
        assert system.bus.name_has_owner(BUS_NAME)
        assert system.bus.activated_pids()
    assert f"on the bus as {BUS_NAME}" in (tmp_path / "activated.log").read_text()


# Spelled out: nobody may not read the checkout to import the contract.
NOBODY_SET_POLICY = f'''
import asyncio
from dbus_next import BusType, Message, MessageType
from dbus_next.aio import MessageBus
async def main():
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    r = await bus.call(Message(destination={BUS_NAME!r}, path={MANAGER_PATH!r},
                               interface={MANAGER_INTERFACE!r}, member="SetPolicy",
                               signature="ss", body=["30-nobody", "1"]))
    print(r.error_name if r.message_type == MessageType.ERROR else "allowed")
asyncio.run(main())
'''


def test_without_polkit_only_root_may_change_anything(tmp_path: Path) -> None:
    from tests.helpers.as_nobody import python_as_nobody
    node = write_node_xml(tmp_path / "node.xml", guest_specs(1))
    config = momd_config(tmp_path, node_uri(node))
    with system_bus_with_polkit(tmp_path / "bus", polkit=False) as system:
        assert not system.polkit_running
        momd = Momd(system, config, tmp_path / "momd.log")
        try:
            for name in ("30-root", "31-root"):
                reply = call(system.address, "SetPolicy", "ss", [name, "1"])
                assert reply.message_type == MessageType.METHOD_RETURN, reply.body
            result = python_as_nobody(NOBODY_SET_POLICY, system.bus.client_env())
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip() == ACCESS_DENIED
            assert "30-nobody" not in policy_names(system.address)
        finally:
            momd.stop()
    assert momd.log_text().count("polkit is not on the bus") == 1
