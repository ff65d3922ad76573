"""virtio-mem on a real guest: momd grows and shrinks it, the guest's MemTotal follows.

Real parts: a private system bus with the real polkitd, momd as a process,
a libvirtd of the test's own with the QEMU driver, and one guest booting
Debian's kernel with the virtio_mem driver in its initramfs
(``ensure_guest_image(virtio_mem=True)``): 256 MiB of boot memory and a
virtio-mem device of 256 MiB in 2 MiB blocks, 128 MiB of it plugged at
boot.  The guest onlines what is plugged as movable memory
(``memhp_default_state=online_movable``), so that it can be unplugged
again, and prints its own MemTotal every second on its serial console.

1. By hand (``SetVirtioMemRequested``), under a momd whose policy does
   nothing and that collects only every 10 minutes: the size-change event
   alone brings the device's new size to the guest's bus properties.
2. Through the shipped default policies: the budget grows the guest to its
   maximum on a roomy host, ``balloon_guests_limit`` shrinks it down to
   what the limit leaves, and lifting the limit grows it back.

Times from the decision (the call, or momd's log line) to the effect
(libvirt's ``<current>``, the guest's MemTotal, the bus) are printed and
listed at the end, not asserted.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from momservice.contract import ACTION_CONTROL_VIRTIO_MEM, GUEST_INTERFACE, INVALID_ARGUMENT
from momservice.contract import guest_path
from tests.e2e.test_real_guests import DEFAULT_POLICIES, BusClient, _skip_reason, wait_until
from tests.helpers.guest_image import (SerialConsole, domain_type, domain_xml,
                                       guest_image_or_skip)
from tests.helpers.momd_process import Momd, momctl, momd_config
from tests.helpers.private_bus import MOM_POLKIT_POLICY, system_bus_with_polkit
from tests.helpers.qemu_libvirtd import LibvirtCallError, QemuLibvirtd

MIB = 1024
BOOT_MIB = 256
DEVICE_MIB = 256
BLOCK_KIB = 2048
PLUGGED_MIB = 128
MAX_KIB = (BOOT_MIB + DEVICE_MIB) * MIB

_reason = _skip_reason()
pytestmark = [pytest.mark.skipif(_reason is not None, reason=_reason or ""),
              pytest.mark.timeout(600)]

#: momd's log line for each request it sends (controllers/virtio_mem.py).
_ASKED = re.compile(r"Asked virtio-mem of guest (?P<name>\S+) \(\S+\) for (?P<kib>\d+) KiB")


@dataclass
class Env:
    tmp: Path
    system: Any
    libvirtd: QemuLibvirtd
    conn: Any
    bus: BusClient
    name: str
    uuid: str
    serial: SerialConsole
    boot_memtotal: int = 0          # the guest's MemTotal with PLUGGED_MIB plugged
    momd: Momd | None = None
    momd_count: int = 0

    @property
    def path(self) -> str:
        return guest_path(self.uuid)

    def start_momd(self, policies: Path, *, collect_interval: float,
                   engine_interval: float) -> Momd:
        assert self.momd is None
        self.momd_count += 1
        tmp = self.tmp / f"momd{self.momd_count}"
        tmp.mkdir()
        config = momd_config(tmp, self.libvirtd.qemu_uri, engine_interval=engine_interval,
                             collect_interval=collect_interval,
                             controllers="Balloon, VirtioMem", policies=policies)
        self.momd = Momd(self.system, config, tmp / "momd.log")
        return self.momd

    def stop_momd(self) -> None:
        if self.momd is not None:
            self.momd.stop()
            self.momd = None

    def device(self) -> dict[str, int]:
        """The device's sizes (KiB) as libvirt's live definition has them."""
        target = ET.fromstring(self.conn.domain_xml(self.uuid)).find(
            "./devices/memory[@model='virtio-mem']/target")
        return {child.tag: int(child.text) for child in target
                if child.tag in ("size", "block", "requested", "current")}

    def props(self) -> dict[str, Any]:
        return self.bus.props(self.path, GUEST_INTERFACE)

    def memtotal_for(self, plugged_kib: int) -> int:
        """The guest's MemTotal with ``plugged_kib`` plugged: what it has at
        boot, give or take whole blocks (MemTotal counts onlined memory exactly)."""
        return self.boot_memtotal + plugged_kib - PLUGGED_MIB * MIB


@pytest.fixture(scope="module")
def env(tmp_path_factory, measure):
    started = time.monotonic()
    image = guest_image_or_skip(virtio_mem=True)
    measure("virtio-mem guest image (fetch/build or cache)",
            f"{time.monotonic() - started:.1f} s (domain type {domain_type()})")
    tmp = tmp_path_factory.mktemp("virtio-mem")
    with contextlib.ExitStack() as stack:
        system = stack.enter_context(system_bus_with_polkit(
            tmp / "sysbus", action_files=(MOM_POLKIT_POLICY, _own_action_file(tmp))))
        libvirtd = QemuLibvirtd(tmp / "lvd")
        libvirtd.start(timeout=60)
        stack.callback(libvirtd.stop)
        conn = libvirtd.client()
        stack.callback(conn.close)
        bus = BusClient(system.address)
        stack.callback(bus.close)
        name = f"mom-e2e-vmem-{uuidlib.uuid4().hex[:8]}"
        e = Env(tmp, system, libvirtd, conn, bus, name, str(uuidlib.uuid4()),
                SerialConsole(tmp / f"{name}.serial"))
        stack.callback(e.stop_momd)
        created = time.monotonic()
        conn.create(domain_xml(name, e.uuid, image, e.serial.path, memory_mib=BOOT_MIB,
                               virtio_mem_mib=DEVICE_MIB, virtio_mem_block_kib=BLOCK_KIB,
                               virtio_mem_requested_mib=PLUGGED_MIB))
        stack.callback(lambda: _destroy(conn, e.uuid))
        # Ready once the device has plugged what it was asked for at boot
        # and the guest has printed a MemTotal after that.
        wait_until(lambda: e.device().get("current") == PLUGGED_MIB * MIB, 240,
                   "the guest's virtio-mem driver to plug its boot request",
                   details=lambda: f"{e.serial.marks()[-5:]} {libvirtd.qemu_log(name)[-800:]}")
        count = len(e.serial.memtotals())
        wait_until(lambda: len(e.serial.memtotals()) > count + 1, 60,
                   "the guest to print its MemTotal", details=lambda: str(e.serial.marks()[-5:]))
        e.boot_memtotal = e.serial.memtotal()
        measure("virtio-mem guest ready", f"{time.monotonic() - created:.1f} s after creation "
                f"(MemTotal {e.boot_memtotal} KiB with {PLUGGED_MIB} MiB plugged)")
        yield e


def _destroy(conn, uuid: str) -> None:
    with contextlib.suppress(LibvirtCallError):
        conn.destroy(uuid)


def _own_action_file(tmp: Path) -> Path:
    """This checkout's control-virtio-mem action in a file of its own name.

    polkitd reads its actions from the host's /usr/share/polkit-1/actions,
    where every test run on this machine installs org.ovirt.mom1.policy
    while its polkitd runs (tests/helpers/private_bus.py): a run of another
    checkout, without this action, replaces that file for as long as it
    runs.  Under a name of its own the action stays known meanwhile.
    """
    root = ET.parse(MOM_POLKIT_POLICY).getroot()
    for action in root.findall("action"):
        if action.get("id") != ACTION_CONTROL_VIRTIO_MEM:
            root.remove(action)
    assert root.find("action") is not None, f"{ACTION_CONTROL_VIRTIO_MEM} not in {MOM_POLKIT_POLICY}"
    path = tmp / "org.ovirt.mom1.e2e-virtio-mem.policy"
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n'
                    '<!DOCTYPE policyconfig PUBLIC\n'
                    ' "-//freedesktop//DTD PolicyKit Policy Configuration 1.0//EN"\n'
                    ' "http://www.freedesktop.org/standards/PolicyKit/1/policyconfig.dtd">\n'
                    + ET.tostring(root, encoding="unicode") + "\n")
    return path


def _hold_policies(tmp: Path) -> Path:
    """A policy set that asks for nothing: only what the test does moves."""
    directory = tmp / "hold-policies"
    directory.mkdir(exist_ok=True)
    (directory / "00-hold.policy").write_text('(debug "hold: nothing to decide")\n')
    return directory


def _follow(e: Env, requested_kib: int, since: float, what: str, measure) -> None:
    """Wait for libvirt, the guest and the bus to show ``requested_kib``
    plugged, and report how long each took from ``since``."""
    wait_until(lambda: e.device()["requested"] == requested_kib, 10,
               f"libvirt's <requested> to be {requested_kib} KiB", interval=0.01,
               details=lambda: str(e.device()))
    requested_at = time.monotonic()
    wait_until(lambda: e.device()["current"] == requested_kib, 60,
               f"the guest to plug or unplug to {requested_kib} KiB", interval=0.01,
               details=lambda: f"{e.device()} {e.serial.marks()[-3:]}")
    current_at = time.monotonic()
    expected = e.memtotal_for(requested_kib)
    wait_until(lambda: e.serial.memtotal() == expected, 30,
               f"the guest's MemTotal to be {expected} KiB", interval=0.02,
               details=lambda: str(e.serial.memtotals()[-5:]))
    memtotal_at = time.monotonic()
    wait_until(lambda: e.props()["VirtioMemCurrent"] == requested_kib, 30,
               "momd to publish the new size", interval=0.01,
               details=lambda: str({k: v for k, v in e.props().items() if "Virtio" in k}))
    bus_at = time.monotonic()
    measure(what, f"<requested> after {1000 * (requested_at - since):.0f} ms, <current> after "
            f"{current_at - since:.2f} s, guest MemTotal after {memtotal_at - since:.2f} s "
            f"(printed every second), VirtioMemCurrent on the bus after {bus_at - since:.2f} s")


# -- 1. by hand, and the event path -------------------------------------------------

def test_set_virtio_mem_requested_resizes_the_guest_and_the_event_updates_the_bus(
        env: Env, measure) -> None:
    # Collections every 10 minutes: the only collection in this test is
    # momd's first; whatever the bus shows after it came with an event.
    env.start_momd(_hold_policies(env.tmp), collect_interval=600, engine_interval=600)
    wait_until(lambda: env.path in env.bus.guest_objects(), 60, "momd to publish the guest",
               details=lambda: env.momd.log_text()[-3000:])
    props = env.props()
    assert (props["VirtioMemMaximum"], props["VirtioMemBlock"], props["VirtioMemRequested"],
            props["VirtioMemCurrent"]) == (DEVICE_MIB * MIB, BLOCK_KIB, PLUGGED_MIB * MIB,
                                           PLUGGED_MIB * MIB)
    # libvirt counts the device in the guest's maximum: the policies' boot
    # memory is BalloonMaximum - VirtioMemMaximum.
    assert props["BalloonMaximum"] == MAX_KIB
    first_sample = props["Statistics"]

    shown = momctl(env.system, "guest", env.name)
    assert shown.returncode == 0, shown.stderr
    print(shown.stdout)
    assert re.search(rf"VirtioMemRequested\s+{PLUGGED_MIB}\.0 MiB", shown.stdout), shown.stdout
    assert re.search(rf"VirtioMemMaximum\s+{DEVICE_MIB}\.0 MiB", shown.stdout), shown.stdout

    # Grow by 64 MiB (asked for 1 KiB less: rounded to the block).
    sent = time.monotonic()
    env.bus.ok(env.path, GUEST_INTERFACE, "SetVirtioMemRequested", "t", [192 * MIB - 1])
    _follow(env, 192 * MIB, sent, "virtio-mem grow 128->192 MiB by hand "
            "(SetVirtioMemRequested)", measure)
    # No collection since the first one: the same sample, its device fields
    # brought up to date by the definition read on the size-change event.
    props = env.props()
    assert props["VirtioMemRequested"] == 192 * MIB
    assert props["Statistics"]["stats_age"] == first_sample["stats_age"]
    assert props["Statistics"]["mem_unused"] == first_sample["mem_unused"]

    sent = time.monotonic()
    env.bus.ok(env.path, GUEST_INTERFACE, "SetVirtioMemRequested", "t", [64 * MIB])
    _follow(env, 64 * MIB, sent, "virtio-mem shrink 192->64 MiB by hand", measure)

    # Beyond the device: refused with the reason, nothing sent.
    reply = env.bus.call(env.path, GUEST_INTERFACE, "SetVirtioMemRequested", "t",
                         [DEVICE_MIB * MIB + BLOCK_KIB])
    assert reply.error_name == INVALID_ARGUMENT, reply.body
    assert "above the device's size" in reply.body[0]
    assert env.device()["requested"] == 64 * MIB
    log = env.momd.log_text()
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]
    env.stop_momd()


# -- 2. through the shipped default policies ----------------------------------------

def _asked(e: Env, mark: int, kib: int) -> bool:
    return any(int(m.group("kib")) == kib and m.group("name") == e.name
               for m in _ASKED.finditer(e.momd.log_text()[mark:]))


def _decided(e: Env, mark: int, kib: int, timeout: float) -> float:
    """The time momd logged its request for ``kib`` KiB (polled)."""
    wait_until(lambda: _asked(e, mark, kib), timeout,
               f"momd to ask the device for {kib} KiB", interval=0.01,
               details=lambda: e.momd.log_text()[mark:][-3000:])
    return time.monotonic()


def test_default_policies_grow_and_shrink_the_guest_through_virtio_mem(env: Env,
                                                                      measure) -> None:
    # The host here is roomy: the budget gives the guest its maximum.
    env.start_momd(DEFAULT_POLICIES, collect_interval=0.3, engine_interval=1.0)
    decided = _decided(env, 0, DEVICE_MIB * MIB, 60)
    _follow(env, DEVICE_MIB * MIB, decided, "virtio-mem grow 64->256 MiB by the default "
            "policy (roomy host; from momd's log line)", measure)
    assert env.props()["BalloonTarget"] == 0  # the balloon was left alone

    # A limit on what the guests hold together: down to the boot memory
    # plus 64 MiB.
    mark = len(env.momd.log_text())
    env.bus.set_parameters(balloon_guests_limit=(BOOT_MIB + 64) * MIB)
    decided = _decided(env, mark, 64 * MIB, 30)
    _follow(env, 64 * MIB, decided, "virtio-mem shrink 256->64 MiB by the default policy "
            "(balloon_guests_limit)", measure)

    mark = len(env.momd.log_text())
    env.bus.set_parameters(balloon_guests_limit=0)
    decided = _decided(env, mark, DEVICE_MIB * MIB, 30)
    _follow(env, DEVICE_MIB * MIB, decided, "virtio-mem grow 64->256 MiB by the default "
            "policy (limit lifted)", measure)
    log = env.momd.log_text()
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]
    assert "Set balloon of guest" not in log
    assert "Out of memory" not in env.serial.text()
    env.stop_momd()
