"""GuestQemuAgent and the balloon's features on a real guest.

A guest booted from the agent variant of the test image
(tests/helpers/guest_image.py, ``guest_agent=True``): Debian's own
``qemu-ga`` runs in its initramfs on the virtio-serial channel
``org.qemu.guest_agent.0``, and the guest does NOT load its balloon driver,
so the balloon reports no memory statistics at all (libvirt's memoryStats
has neither ``unused`` nor ``available``).  Without the agent such a guest
would never be complete enough for the policies; with ``GuestQemuAgent``
configured, momd reads its /proc/meminfo and /proc/vmstat through libvirt,
publishes the figures and the policies decide on them.  Its
``<memballoon>`` has ``autodeflate='on'`` and ``freePageReporting='on'``,
which momd publishes as BalloonAutodeflate and BalloonFreePageReporting.

Real parts: a private system bus with polkitd, momd as a process, the
test's own libvirtd with the QEMU driver, QEMU (TCG unless the CPU
virtualizes for real), the guest's kernel and its qemu-ga.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid as uuidlib
from pathlib import Path

import pytest
from momservice.contract import GUEST_INTERFACE, MANAGER_INTERFACE, MANAGER_PATH, guest_path
from tests.e2e.test_real_guests import (MOM_POLICIES, BusClient, _skip_reason, wait_until)
from tests.helpers.guest_image import SerialConsole, domain_type, domain_xml, guest_image_or_skip
from tests.helpers.momd_process import Momd, momctl, momd_config
from tests.helpers.private_bus import system_bus_with_polkit
from tests.helpers.qemu_libvirtd import LibvirtCallError, QemuLibvirtd

GUEST_MIB = 384
GUEST_NAME = f"mom-e2e-agent-{os.getpid()}"
AGENT_STARTED = re.compile(r"^MOMTEST agent started on (\S+)", re.M)

_reason = _skip_reason()
pytestmark = [pytest.mark.skipif(_reason is not None, reason=_reason or ""),
              pytest.mark.timeout(600)]


class AgentGuestEnv:
    """The libvirtd, the guest and momd of this module."""

    def __init__(self, tmp: Path, system, libvirtd: QemuLibvirtd, image) -> None:
        self.tmp, self.system, self.libvirtd, self.image = tmp, system, libvirtd, image
        self.conn = libvirtd.client()
        self.bus = BusClient(system.address)
        self.uuid = str(uuidlib.uuid4())
        self.serial = SerialConsole(tmp / f"{GUEST_NAME}.serial")
        self.momd: Momd | None = None
        self.created = 0.0
        self.agent_seen: float | None = None     # monotonic, when its mark showed up

    @property
    def path(self) -> str:
        return guest_path(self.uuid)

    def start_momd(self) -> Momd:
        tmp = self.tmp / "momd"
        tmp.mkdir()
        config = momd_config(tmp, self.libvirtd.qemu_uri, engine_interval=1.0,
                             collect_interval=0.3, controllers="Balloon",
                             policies=MOM_POLICIES)
        # The agent listed last: where the balloon reports, its figures win
        # (MoM's rule); this guest's balloon reports nothing.
        with config.open("a") as out:
            out.write("[guest]\ncollectors = GuestQemuProc, GuestMemory, GuestBalloon, "
                      "GuestQemuAgent\n\n[Collector: GuestQemuAgent]\ntimeout = 5\n")
        self.momd = Momd(self.system, config, tmp / "momd.log")
        return self.momd

    def start_guest(self) -> None:
        self.created = time.monotonic()
        self.conn.create(domain_xml(
            GUEST_NAME, self.uuid, self.image, self.serial.path, memory_mib=GUEST_MIB,
            guest_agent=True, balloon_driver=False, stats_period=0,
            balloon_attributes={"autodeflate": "on", "freePageReporting": "on"}))

    def wait_agent_started(self, timeout: float = 180.0) -> str:
        """Until the guest's /init has started qemu-ga; its port."""
        match = wait_until(lambda: AGENT_STARTED.search(self.serial.text()), timeout,
                           "the guest to start its agent", interval=0.05,
                           details=lambda: "\n".join(self.serial.marks()[-5:])
                           + self.libvirtd.qemu_log(GUEST_NAME)[-800:])
        self.agent_seen = time.monotonic()
        return match.group(1)

    def guest_props(self) -> dict:
        objects = self.bus.guest_objects()
        return objects.get(self.path, {})

    def close(self) -> None:
        try:
            if self.momd is not None:
                self.momd.stop()
        finally:
            with contextlib.suppress(LibvirtCallError):
                self.conn.destroy(self.uuid)
            self.conn.close()
            self.bus.close()


@pytest.fixture(scope="module")
def agent_env(tmp_path_factory, measure):
    started = time.monotonic()
    image = guest_image_or_skip(guest_agent=True)
    measure("guest image with qemu-ga (fetch/build or cache)",
            f"{time.monotonic() - started:.1f} s (domain type {domain_type()})")
    tmp = tmp_path_factory.mktemp("e2e-agent")
    with contextlib.ExitStack() as stack:
        system = stack.enter_context(system_bus_with_polkit(tmp / "sysbus"))
        libvirtd = QemuLibvirtd(tmp / "lvd")
        libvirtd.start(timeout=60)
        stack.callback(libvirtd.stop)
        env = AgentGuestEnv(tmp, system, libvirtd, image)
        stack.callback(env.close)
        env.start_momd()
        env.start_guest()
        yield env


def test_guest_without_balloon_statistics_is_managed_on_its_agents_figures(agent_env, measure):
    env = agent_env
    port = env.wait_agent_started()
    # The guest's own MemTotal, as its /init prints it every second.
    memtotal = wait_until(env.serial.memtotal, 60, "the guest to print its MemTotal")

    def published_with_agent_figures() -> dict | None:
        props = env.guest_props()
        if props.get("MemAvailable") == memtotal and props.get("MemUnused", 0) > 0:
            return props
        return None
    props = wait_until(published_with_agent_figures, 120,
                       "momd to publish the guest with its agent's figures", interval=0.05,
                       details=lambda: f"{env.guest_props()}\n{env.momd.log_text()[-3000:]}")
    first_sample = time.monotonic() - env.agent_seen
    measure("GuestQemuAgent: agent start (guest's console) to its first figures on the bus",
            f"{first_sample:.1f} s (agent on {port}; guest booted to agent in "
            f"{env.agent_seen - env.created:.1f} s)")

    # The figures are the agent's: the balloon reports none of them.
    stats = env.conn.memory_stats(env.uuid)
    assert not {"unused", "available", "usable"} & set(stats), stats
    assert "no balloon driver" in "\n".join(env.serial.marks())
    assert 0 < props["MemUnused"] < memtotal
    assert 0 < props["MemUsable"] <= memtotal
    assert props["MinorFaults"] > 0 and props["MinorFaults"] >= props["MajorFaults"]
    statistics = props["Statistics"]
    assert statistics["swap_total"].value == 0     # the initramfs guest has no swap
    assert statistics["stats_age"].value >= 0

    # ... and they follow the guest: read again, its page faults have grown.
    wait_until(lambda: env.bus.props(env.path, GUEST_INTERFACE)["Statistics"]
               ["minor_fault"].value > statistics["minor_fault"].value, 30,
               "the agent's figures to be read again")
    log = env.momd.log_text()
    assert "Traceback" not in log, log[-3000:]

    # The policies decide on them: with the host pressed (the pressure level
    # above any real free share), MoM's balloon policy computes a target for
    # the guest from what the agent says it uses.
    env.bus.set_parameters(balloon_pressure_level=0.99)
    try:
        controls = env.bus.ok(MANAGER_PATH, MANAGER_INTERFACE, "EvaluateNow", "b", [True])[0]
    finally:
        env.bus.set_parameters(balloon_pressure_level=0.20)
    assert env.path in controls, controls
    target = controls[env.path]["balloon_target"].value
    used = props["BalloonCurrent"] - props["MemUnused"]
    assert used < target < props["BalloonCurrent"], (target, props)


def test_balloon_features_from_the_live_definition(agent_env):
    env = agent_env
    wait_until(lambda: env.path in env.bus.guest_objects(), 240,
               "momd to publish the guest",
               details=lambda: env.momd.log_text()[-3000:])
    balloon = re.search(r"<memballoon [^>]*>", env.conn.live_xml(env.uuid)).group(0)
    assert "autodeflate='on'" in balloon and "freePageReporting='on'" in balloon, balloon
    props = env.bus.props(env.path, GUEST_INTERFACE)
    assert props["BalloonAutodeflate"] == 1
    assert props["BalloonFreePageReporting"] == 1
    assert props["Statistics"]["balloon_free_page_reporting"].value == 1
    shown = momctl(env.system, "guest", GUEST_NAME)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^\s+BalloonAutodeflate\s+1 \(on\)$", shown.stdout, re.M), shown.stdout
    assert re.search(r"^\s+BalloonFreePageReporting\s+1 \(on\)$", shown.stdout, re.M)
