"""IoTune on a real guest: disk limits from its metadata, applied by momd's policy.

vdsm-style policies (benchmarks/policies/vdsm-style, 05-iotune.policy among
them, unchanged) -> momd's IoTune mechanism -> libvirtd -> QEMU's block
layer, read back with libvirt's blockIoTune.

Real parts: a private system bus with the real polkitd, momd as a process,
a libvirtd of the test's own with the QEMU driver (tests/helpers/
qemu_libvirtd.py), and one guest booting Debian's kernel with a busybox
initramfs (tests/helpers/guest_image.py) with a small raw disk.  Block I/O
throttling is QEMU's own: no cgroups are involved, so the test's libvirtd
without cgroup controllers does it for real.

The tests run in the order written, on one guest; each first brings it to
the state it needs.  The times printed (not asserted): from momd's decision (its mechanism's
"Sending I/O limits" log line) to libvirt's blockIoTune showing the limits,
and from the change that prompted it (a parameter, the metadata) to that.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import subprocess
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest

from momservice.contract import GUEST_INTERFACE, guest_path
from momservice.hypervisor.libvirt_iotune import METADATA_KEY, METADATA_NS
from tests.e2e.test_real_guests import _skip_reason, wait_until
from tests.helpers.guest_image import SerialConsole, domain_xml, guest_image_or_skip
from tests.helpers.momd_process import Momd, momctl, momd_config
from tests.helpers.private_bus import system_bus_with_polkit
from tests.helpers.qemu_libvirtd import LibvirtCallError, QemuLibvirtd

REPO = Path(__file__).resolve().parents[2]
VDSM_STYLE = REPO / "benchmarks" / "policies" / "vdsm-style"
GUEST_PREFIX = f"mom-e2e-iotune-{os.getpid()}-"
MIB = 1024 * 1024
#: The maximum limits the guest's metadata gives its disk, then after a change.
FIRST_MAXIMUM = {"total_bytes_sec": 10 * MIB, "total_iops_sec": 200}
SECOND_MAXIMUM = {"read_bytes_sec": 4 * MIB, "write_bytes_sec": 2 * MIB,
                  "total_iops_sec": 100}
SIX = ("total_bytes_sec", "read_bytes_sec", "write_bytes_sec",
       "total_iops_sec", "read_iops_sec", "write_iops_sec")


_reason = _skip_reason()
pytestmark = [pytest.mark.skipif(_reason is not None, reason=_reason or ""),
              pytest.mark.timeout(600)]


def metadata(maximum: dict[str, int], guaranteed: dict[str, int] | None = None) -> str:
    """mom's I/O limits element for disk vda (docs/mechanisms/iotune.md)."""
    def limits(tag: str, values: dict[str, int]) -> str:
        inner = "".join(f"<{k}>{v}</{k}>" for k, v in values.items())
        return f"<{tag}>{inner}</{tag}>"
    return (f"<iotune xmlns='{METADATA_NS}'><device name='vda'>"
            f"{limits('guaranteed', guaranteed or {'total_bytes_sec': MIB})}"
            f"{limits('maximum', maximum)}</device></iotune>")


def _log_time(line: str) -> float:
    stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return time.mktime(stamp.timetuple()) + stamp.microsecond / 1e6


def _with_limits(expected: dict[str, int]) -> dict[str, int]:
    return {k: expected.get(k, 0) for k in SIX}


class Setup:
    """The parts, started once for this module."""

    def __init__(self, tmp: Path, system: Any, libvirtd: QemuLibvirtd, image: Any) -> None:
        self.tmp, self.system, self.libvirtd, self.image = tmp, system, libvirtd, image
        self.conn = libvirtd.client()
        self.uuid = str(uuidlib.uuid4())
        self.name = f"{GUEST_PREFIX}0"
        self.momd: Momd | None = None

    def start_guest(self) -> None:
        disk = self.tmp / "disk.raw"
        with open(disk, "wb") as f:
            f.truncate(16 * MIB)
        self.serial = SerialConsole(self.tmp / f"{self.name}.serial")
        self.conn.create(domain_xml(self.name, self.uuid, self.image, self.serial.path,
                                    memory_mib=384, disk=disk,
                                    metadata=metadata(FIRST_MAXIMUM)))

    def start_momd(self) -> None:
        config = momd_config(self.tmp / "momd", self.libvirtd.qemu_uri, engine_interval=1.0,
                             collect_interval=0.3, controllers="Balloon, IoTune",
                             policies=VDSM_STYLE)
        with open(config, "a") as f:
            f.write("[guest]\ncollectors = GuestQemuProc, GuestMemory, GuestBalloon, "
                    "GuestIoTune\n")
        self.momd = Momd(self.system, config, self.tmp / "momd.log")

    def wait_published(self) -> None:
        """Until momd manages the guest (its balloon driver reports) with its disk."""
        def published() -> bool:
            result = momctl(self.system, "guest", self.name, "--json")
            return result.returncode == 0 and '"IoTune"' in result.stdout \
                and '"MemUnused": 0' not in result.stdout
        wait_until(published, 150, "momd to publish the guest with its disk",
                   interval=0.5, details=lambda: self.log()[-3000:])

    def enable(self) -> None:
        """ioTuneEnabled on, and the disk limited (the tests' starting point)."""
        self.momctl("params", "set", "ioTuneEnabled=1")
        wait_until(lambda: any(self.limits().values()), 30, "the disk to be limited",
                   details=lambda: self.log()[-2000:])

    def limits(self) -> dict[str, int]:
        tune = self.conn.block_io_tune(self.uuid, "vda")
        return {k: tune[k] for k in SIX}

    def momctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = momctl(self.system, *args)
        assert result.returncode == 0, result.stderr
        return result

    def log(self) -> str:
        return self.momd.log_text() if self.momd else ""

    def close(self) -> None:
        try:
            if self.momd is not None:
                self.momd.stop()
        finally:
            with contextlib.suppress(LibvirtCallError):
                self.conn.destroy(self.uuid)
            self.conn.close()


@pytest.fixture(scope="module")
def iotune(tmp_path_factory):
    image = guest_image_or_skip()
    tmp = tmp_path_factory.mktemp("e2e-iotune")
    with contextlib.ExitStack() as stack:
        system = stack.enter_context(system_bus_with_polkit(tmp / "sysbus"))
        libvirtd = QemuLibvirtd(tmp / "lvd")
        libvirtd.start(timeout=60)
        stack.callback(libvirtd.stop)
        setup = Setup(tmp, system, libvirtd, image)
        stack.callback(setup.close)
        setup.start_guest()
        setup.start_momd()
        setup.wait_published()
        yield setup


def _applied(setup: Setup, expected: dict[str, int], since: int, changed: float, what: str,
             measure) -> None:
    """Wait for libvirt to show ``expected``; print decision -> effect (and
    the time since the change at ``changed``, wall clock)."""
    want = _with_limits(expected)
    wait_until(lambda: setup.limits() == want, 30, f"libvirt to show {what}", interval=0.02,
               details=lambda: f"{setup.limits()}\n{setup.log()[-3000:]}")
    seen = time.time()
    sends = [line for line in setup.log()[since:].splitlines()
             if "Sending I/O limits of guest" in line and setup.name in line]
    assert sends, setup.log()[since:][-3000:]
    decided = _log_time(sends[0])
    measure(f"IoTune {what}: decision -> blockIoTune shows it",
            f"{(seen - decided) * 1000:.0f} ms (from the change: "
            f"{(seen - changed) * 1000:.0f} ms, policy interval 1 s)")


def test_the_vdsm_style_policy_sets_a_real_disk_to_its_maximum(iotune, measure) -> None:
    assert iotune.limits() == _with_limits({})   # ioTuneEnabled is off: unlimited

    mark, changed = len(iotune.log()), time.time()
    iotune.momctl("params", "set", "ioTuneEnabled=1")
    _applied(iotune, FIRST_MAXIMUM, mark, changed, "maximum applied (ioTuneEnabled set)", measure)

    # momctl shows the disk readably: its maximum and what it has now.
    def shown() -> str | None:
        text = iotune.momctl("guest", iotune.name).stdout
        return text if "current     total 10.0 MiB/s, total 200 IOPS" in text else None
    text = wait_until(shown, 15, "momctl guest to show the new limits", interval=0.3,
                      details=lambda: iotune.momctl("guest", iotune.name).stdout)
    assert re.search(r"maximum\s+total 10.0 MiB/s, total 200 IOPS", text), text
    assert re.search(r"guaranteed\s+total 1.0 MiB/s", text), text
    assert "disk.raw" in text


def test_a_metadata_change_reaches_the_disk(iotune, measure) -> None:
    iotune.enable()
    mark, changed = len(iotune.log()), time.time()
    iotune.conn.set_metadata(iotune.uuid, metadata(SECOND_MAXIMUM), METADATA_KEY, METADATA_NS)
    # total_bytes_sec gives way to read and write: libvirt sets a group at once.
    _applied(iotune, SECOND_MAXIMUM, mark, changed, "new maximum from a metadata change", measure)


def test_set_io_tune_by_hand_then_the_policy_lifts_it(iotune, measure) -> None:
    iotune.enable()
    mark, changed = len(iotune.log()), time.time()
    iotune.momctl("params", "set", "ioTuneEnabled=0")
    _applied(iotune, {}, mark, changed, "limits lifted (ioTuneEnabled cleared)", measure)

    # SetIoTune over the bus, as root (busctl, a real client); the policy,
    # which lifts every limit each second, takes it back.
    mark = len(iotune.log())
    path = guest_path(iotune.uuid)
    sent = time.monotonic()
    call = subprocess.run(["busctl", f"--address={iotune.system.address}", "call",
                           "org.ovirt.mom1", path, GUEST_INTERFACE, "SetIoTune", "sa{sv}",
                           "vda", "1", "read_iops_sec", "t", "50"],
                          capture_output=True, text=True, timeout=60)
    replied = time.monotonic()
    assert call.returncode == 0, call.stderr + iotune.log()[-2000:]
    # libvirt applied it before the reply; the policy may take it back
    # within its next evaluation, so the reading right after is not asserted.
    after = iotune.limits()["read_iops_sec"]
    measure("IoTune SetIoTune by hand: call -> reply",
            f"{(replied - sent) * 1000:.0f} ms (blockIoTune right after: read_iops_sec "
            f"{after})")
    assert re.search(r"Set I/O limits of guest \S+ \(\S+\) disk vda: read_iops_sec=50 ",
                     iotune.log()[mark:]), iotune.log()[mark:][-2000:]
    wait_until(lambda: iotune.limits() == _with_limits({}), 30,
               "the policy to lift the hand-set limit again", interval=0.02,
               details=lambda: iotune.log()[-2000:])

    # Unknown disks and limits are refused with the core's errors.
    bad = subprocess.run(["busctl", f"--address={iotune.system.address}", "call",
                          "org.ovirt.mom1", path, GUEST_INTERFACE, "SetIoTune", "sa{sv}",
                          "vdz", "1", "read_iops_sec", "t", "50"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "no disk" in bad.stderr, bad.stderr
