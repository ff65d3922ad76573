"""SetMemTune over the real bus with the real polkitd, on libvirt's test driver.

momd as a process with the MemTune controller and the GuestMemTune
collector; guests from the test driver in a libvirtd of the test's own
(which implements virDomainSetMemoryParameters and keeps the live
<memtune>).  A real QEMU guest is squeezed in tests/e2e/test_memtune.py.
"""

from __future__ import annotations

import json

import libvirt
import pytest

from momservice import contract
from momservice.contract import ACTION_CONTROL_MEMTUNE, GUEST_INTERFACE, guest_path
from momservice.hypervisor.libvirt_memtune import UNLIMITED_KIB
from tests.bus.test_bus_service import call, error, libvirtd, ok, prop  # noqa: F401 (fixture)
from tests.helpers.as_nobody import python_as_nobody
from tests.helpers.momd_process import Momd, momd_config
from tests.helpers.polkit_single_action import installed_action
from tests.helpers.polling import wait_until
from tests.helpers.private_bus import skip_reason, system_bus_with_polkit
from tests.helpers.private_libvirtd import find_libvirtd
from dbus_next import Variant

_reason = skip_reason() or (None if find_libvirtd() else "libvirtd is not installed")
pytestmark = [pytest.mark.skipif(_reason is not None, reason=_reason or ""),
              pytest.mark.timeout(180)]

FLOOR_KIB = 131072


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("memtune-bus")
    with installed_action(ACTION_CONTROL_MEMTUNE, tmp), \
            system_bus_with_polkit(tmp / "sysbus") as system:
        yield system


@pytest.fixture(scope="module")
def momd(system, libvirtd, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("momd")
    config = momd_config(tmp, libvirtd.uri("test", "/default"), controllers="MemTune",
                         extra_main=f"balloon-floor = {FLOOR_KIB}\n")
    config.write_text(config.read_text() + "[guest]\ncollectors = GuestQemuProc, "
                      "GuestMemory, GuestBalloon, GuestMemTune\n")
    daemon = Momd(system, config, tmp / "momd.log")
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def domain(libvirtd):
    conn = libvirt.open(libvirtd.uri("test", "/default"))
    try:
        yield conn.lookupByName("test")
    finally:
        conn.close()


def _limits(**values: int) -> list:
    return [{k: Variant("t", v) for k, v in values.items()}]


def test_root_sets_memory_limits_and_properties_follow(system, momd, domain) -> None:
    path = guest_path(domain.UUIDString())
    wait_until(lambda: prop(system, path, GUEST_INTERFACE, "MemHardLimit") == 0,
               what="momd to publish the guest")
    hard, soft = 786432, 524288
    ok(call(system, path, GUEST_INTERFACE, "SetMemTune", "a{sv}",
            _limits(hard_limit=hard, soft_limit=soft)))
    params = domain.memoryParameters()
    assert (params["hard_limit"], params["soft_limit"], params["swap_hard_limit"]) == (
        hard, soft, UNLIMITED_KIB)
    # Published when the call returns: the call reads the definition again.
    assert prop(system, path, GUEST_INTERFACE, "MemHardLimit") == hard
    assert prop(system, path, GUEST_INTERFACE, "MemSoftLimit") == soft
    assert prop(system, path, GUEST_INTERFACE, "MemSwapHardLimit") == 0

    for bad, why in (({"hard_limit": 1024}, "floor"),
                     ({"soft_limit": hard + 1}, "above mem_hard_limit"),
                     ({"hard_limit": "lots"}, "KiB"),
                     ({"quota": 5}, "unknown memory limit quota")):
        body = [{k: Variant("t" if isinstance(v, int) else "s", v) for k, v in bad.items()}]
        name, text = error(call(system, path, GUEST_INTERFACE, "SetMemTune", "a{sv}", body))
        assert name == contract.INVALID_ARGUMENT and why in text, (bad, text)
    assert domain.memoryParameters()["hard_limit"] == hard

    ok(call(system, path, GUEST_INTERFACE, "SetMemTune", "a{sv}",
            _limits(hard_limit=0, soft_limit=0)))
    assert domain.memoryParameters()["hard_limit"] == UNLIMITED_KIB
    assert prop(system, path, GUEST_INTERFACE, "MemHardLimit") == 0


NOBODY_SET = f"MOM, GUEST = {contract.BUS_NAME!r}, {GUEST_INTERFACE!r}\n" + r'''
import asyncio, json
from dbus_next import BusType, Message, MessageFlag, MessageType, Variant
from dbus_next.aio import MessageBus
async def main():
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    out = []
    for interactive in (False, True):
        flags = MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION if interactive else MessageFlag.NONE
        r = await bus.call(Message(destination=MOM, path=PATH, interface=GUEST,
                                   member="SetMemTune", signature="a{sv}",
                                   body=[{"hard_limit": Variant("t", 786432)}], flags=flags))
        out.append(r.error_name if r.message_type == MessageType.ERROR else None)
    print(json.dumps(out))
asyncio.run(main())
'''


def test_nobody_may_not_set_memory_limits(system, momd, domain) -> None:
    path = guest_path(domain.UUIDString())
    wait_until(lambda: prop(system, path, GUEST_INTERFACE, "MemHardLimit") == 0,
               what="momd to publish the guest")
    result = python_as_nobody(f"PATH = {path!r}\n" + NOBODY_SET, system.bus.client_env(),
                              timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [contract.INTERACTIVE_AUTHORIZATION_REQUIRED,
                                         contract.ACCESS_DENIED]
    assert domain.memoryParameters()["hard_limit"] == UNLIMITED_KIB
