"""CpuTune end to end: a CPU limit set on a real guest, applied by momd through libvirt.

The chain: vdsm's way of asking (the domain metadata ``vcpuLimit`` in
``http://ovirt.org/vm/tune/1.0``, set with libvirt's setMetadata) -> the
METADATA_CHANGE event -> momd's GuestCpuTune fields -> the vdsm-style
policy set (benchmarks/policies/vdsm-style, 01 to 05, unchanged) -> the
CpuTune controller -> libvirt's scheduler parameters -> the guest's cpu
cgroup (``cpu.cfs_quota_us`` of each vCPU; ``cpu.max`` on cgroup v2, untried).
momd runs vdsm's set of controllers: Balloon, KSM, CpuTune and IoTune.

Real parts: the private system bus with polkitd, momd as a process, a
private libvirtd with the QEMU driver allowed the cpu cgroup controller
(``QemuLibvirtd(cgroups=("cpu",))``), a guest of 2 vCPUs booting Debian's
kernel.  The times from the limit being set to momd's decision and to the
effect in libvirt and the cgroup are printed, never asserted.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid as uuidlib
from datetime import datetime
from pathlib import Path

import pytest
from dbus_next import MessageType, Variant

from momservice.contract import (ACCESS_DENIED, ACTION_CONTROL_CPUTUNE, GUEST_INTERFACE,
                                 HOST_INTERFACE, HOST_PATH, INVALID_ARGUMENT, guest_path)
from momservice.hypervisor.libvirt_cputune import TUNE_NAMESPACE
from tests.e2e.test_real_guests import REPO, BusClient, _skip_reason, _take_real_ksm, wait_until
from tests.helpers.guest_image import domain_xml, guest_image_or_skip
from tests.helpers.momd_process import Momd, momd_config
from tests.helpers.private_bus import replaced_actions_reason, system_bus_with_polkit
from tests.helpers.qemu_libvirtd import (LibvirtCallError, QemuLibvirtd, cgroup_skip_reason,
                                         qemu_processes)

VDSM_STYLE = REPO / "benchmarks" / "policies" / "vdsm-style"
GUEST_NAME = f"mom-e2e-cputune-{os.getpid()}"
VCPUS = 2
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The cgroup v1 cpu hierarchy (this machine), or None on a cgroup v2 host.
CPU_CGROUP: Path | None = next((p for p in (CGROUP_ROOT / "cpu", CGROUP_ROOT / "cpu,cpuacct")
                                if (p / "cpu.cfs_quota_us").exists()), None)
#: vdsm's rule, as 04-cputune.policy states it (its own unit tests check it
#: against worked examples: tests/policy/test_vdsm_style_cputune.py).
DEFAULT_PERIOD = 100000
MIN_QUOTA = 1000


def vdsm_quota(limit: int, host_cpus: int, vcpus: int) -> tuple[int, int]:
    quota = limit / 100 * DEFAULT_PERIOD * host_cpus / vcpus
    stretch = 1 if quota > MIN_QUOTA else 1 + MIN_QUOTA / quota
    return round(stretch * quota), round(stretch * DEFAULT_PERIOD)


_reason = _skip_reason() or cgroup_skip_reason(("cpu",))
pytestmark = [pytest.mark.skipif(_reason is not None, reason=_reason or ""),
              pytest.mark.timeout(900)]   # the set-up may wait for the real KSM


class CpuTuneE2E:
    """The daemon, the guest and momd of this module, and what they show."""

    def __init__(self, tmp: Path, system, libvirtd: QemuLibvirtd, image, controllers: str):
        self.tmp, self.system, self.libvirtd = tmp, system, libvirtd
        self.controllers = controllers
        self.conn = libvirtd.client()
        self.bus = BusClient(system.address)
        self.uuid = str(uuidlib.uuid4())
        self.conn.create(domain_xml(GUEST_NAME, self.uuid, image, tmp / "serial",
                                    memory_mib=256, vcpus=VCPUS))
        self.momd: Momd | None = None

    def start_momd(self) -> None:
        guest_collectors = "GuestQemuProc, GuestMemory, GuestBalloon, GuestCpuTune, GuestIoTune"
        config = momd_config(self.tmp / "momd", self.libvirtd.qemu_uri, engine_interval=1.0,
                             controllers=self.controllers, policies=VDSM_STYLE,
                             extra_main=f"\n[guest]\ncollectors = {guest_collectors}\n")
        self.momd = Momd(self.system, config, self.tmp / "momd.log")

    def wait_published(self) -> dict:
        """The guest's properties once momd publishes it (its balloon driver
        reporting: the guest has booted) with its CPU tuning."""
        def published() -> dict | None:
            objects = self.bus.guest_objects()
            props = objects.get(self.path)
            # MemUnused: the balloon driver reports, the guest is in the
            # policies' Guests (complete samples only).
            return props if props and props["VcpuCount"] == VCPUS and props["MemUnused"] > 0 \
                else None
        return wait_until(published, 150, "momd to publish the booted guest with its CPU tuning",
                          details=lambda: self.log_text()[-3000:])

    @property
    def path(self) -> str:
        return guest_path(self.uuid)

    def props(self) -> dict:
        return self.bus.props(self.path, GUEST_INTERFACE)

    def sched(self) -> dict[str, int]:
        return self.conn.scheduler_parameters(self.uuid)

    def set_limit(self, percent: int | None) -> None:
        xml = None if percent is None else f"<qos><vcpuLimit>{percent}</vcpuLimit></qos>"
        self.conn.set_metadata(self.uuid, xml, "ovirt-tune", TUNE_NAMESPACE)

    def vcpu_cgroups(self) -> list[Path]:
        """The cpu cgroup directory of each vCPU thread of the guest's QEMU."""
        pid = self.libvirtd.qemu_pids()[GUEST_NAME]
        lines = [l.split(":", 2) for l in Path(f"/proc/{pid}/cgroup").read_text().splitlines()]
        if CPU_CGROUP is not None:
            path = next(p for _, names, p in lines if "cpu" in names.split(","))
            root = CPU_CGROUP
        else:
            path = next(p for number, _, p in lines if number == "0")
            root = CGROUP_ROOT
        # QEMU's main thread sits in the domain's "emulator" group; the vCPU
        # threads in vcpu0, vcpu1, ... beside it.
        domain = root / path.lstrip("/")
        domain = domain.parent if domain.name == "emulator" else domain
        return sorted(domain.glob("vcpu[0-9]*"))

    def cgroup_bandwidth(self) -> set[tuple[int, int]]:
        """(quota, period) of each vCPU's cgroup, -1 for no quota (v1's way)."""
        found = set()
        for group in self.vcpu_cgroups():
            if (group / "cpu.cfs_quota_us").exists():
                found.add((int((group / "cpu.cfs_quota_us").read_text()),
                           int((group / "cpu.cfs_period_us").read_text())))
            else:   # cgroup v2: "max 100000" or "25000 100000"
                quota, period = (group / "cpu.max").read_text().split()
                found.add((-1 if quota == "max" else int(quota), int(period)))
        return found

    def log_text(self) -> str:
        return self.momd.log_text() if self.momd else ""

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
def env(tmp_path_factory, measure):
    image = guest_image_or_skip()
    tmp = tmp_path_factory.mktemp("cputune")
    qemu_before = {pid for pid, _ in qemu_processes()}
    with contextlib.ExitStack() as stack:
        ksm_reason = _take_real_ksm(stack)
        if ksm_reason:
            measure("cputune: KSM controller left out", ksm_reason)
        system = stack.enter_context(system_bus_with_polkit(tmp / "sysbus"))
        libvirtd = QemuLibvirtd(tmp / "lvd", cgroups=("cpu",))
        libvirtd.start(timeout=60)
        stack.callback(libvirtd.stop)
        # vdsm's set of controllers (the guest has no disk: IoTune has nothing to do).
        controllers = ("Balloon, CpuTune, IoTune" if ksm_reason
                       else "Balloon, KSM, CpuTune, IoTune")
        try:
            e2e = CpuTuneE2E(tmp, system, libvirtd, image, controllers)
        except LibvirtCallError as e:
            pytest.fail(f"the guest did not start under a libvirtd with the cpu cgroup "
                        f"controller: {e}")
        stack.callback(e2e.close)
        yield e2e
    leftovers = [(pid, cmd) for pid, cmd in qemu_processes()
                 if pid not in qemu_before and f"guest={GUEST_NAME}" in cmd]
    assert not leftovers, f"QEMU processes left behind: {leftovers}"


def _log_time(text: str, pattern: str) -> float | None:
    """Wall-clock time of the first momd log line matching ``pattern``."""
    match = re.search(rf"^(\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}}) .*{pattern}", text, re.M)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_the_guest_has_a_cpu_cgroup_and_momd_reads_its_tuning(env, measure) -> None:
    # Without a limit libvirt leaves the kernel's CFS defaults.
    assert {k: env.sched()[k] for k in ("vcpu_quota", "vcpu_period")} == \
        {"vcpu_quota": -1, "vcpu_period": DEFAULT_PERIOD}
    assert len(env.vcpu_cgroups()) == VCPUS
    assert env.cgroup_bandwidth() == {(-1, DEFAULT_PERIOD)}
    env.start_momd()
    props = env.wait_published()
    assert (props["VcpuQuota"], props["VcpuPeriod"], props["VcpuUserLimit"]) == \
        (-1, DEFAULT_PERIOD, 100)
    controllers = env.bus.props("/org/ovirt/mom1", "org.ovirt.mom1.Manager")["Controllers"]
    assert "CpuTune" in controllers and "Balloon" in controllers


@pytest.mark.parametrize("limit", [25, 1])
def test_a_vcpu_limit_in_the_metadata_becomes_the_guests_quota(env, measure, limit) -> None:
    if env.momd is None:
        env.start_momd()
        env.wait_published()
    host_cpus = env.bus.props(HOST_PATH, HOST_INTERFACE)["CpuCount"]
    quota, period = vdsm_quota(limit, host_cpus, VCPUS)
    mark = len(env.log_text())
    set_at = time.time()
    env.set_limit(limit)
    seen = wait_until(lambda: env.props()["VcpuUserLimit"] == limit, 30,
                      f"momd to read the limit {limit}", interval=0.02)
    seen_at = time.time()
    wait_until(lambda: (env.sched()["vcpu_quota"], env.sched()["vcpu_period"]) == (quota, period),
               30, f"libvirt's vcpu_quota/vcpu_period to become {quota}/{period}",
               interval=0.02, details=lambda: f"{env.sched()}\n{env.log_text()[mark:][-3000:]}")
    libvirt_at = time.time()
    wait_until(lambda: env.cgroup_bandwidth() == {(quota, period)}, 10,
               "the vCPUs' cgroups to carry the quota", interval=0.02,
               details=lambda: str(env.cgroup_bandwidth()))
    cgroup_at = time.time()
    assert seen
    logged_at = _log_time(env.log_text()[mark:], rf"Set CPU tuning of guest {GUEST_NAME}")
    assert logged_at is not None, env.log_text()[mark:][-3000:]
    measure(f"cputune: limit {limit}% ({quota}/{period} us, {host_cpus} host CPUs)",
            f"metadata -> momd sees it {1000 * (seen_at - set_at):.0f} ms, "
            f"-> momd's decision applied (log) {1000 * (logged_at - set_at):.0f} ms, "
            f"-> libvirt shows it {1000 * (libvirt_at - set_at):.0f} ms, "
            f"-> vCPU cgroups {1000 * (cgroup_at - set_at):.0f} ms "
            f"(policy interval 1 s)")
    # momd's view follows, and what is in force is not sent again.
    wait_until(lambda: (env.props()["VcpuQuota"], env.props()["VcpuPeriod"]) == (quota, period),
               30, "momd to publish the quota in force")
    evaluations = _evaluations_after(env, 3)
    sends = env.log_text()[mark:].count(f"Set CPU tuning of guest {GUEST_NAME}")
    assert sends == 1, (evaluations, env.log_text()[mark:][-3000:])


def _evaluations_after(env: CpuTuneE2E, count: int) -> int:
    manager = ("/org/ovirt/mom1", "org.ovirt.mom1.Manager")
    seen = {env.bus.props(*manager)["LastEvaluation"]}

    def enough() -> bool:
        seen.add(env.bus.props(*manager)["LastEvaluation"])
        return len(seen) > count
    wait_until(enough, 30, f"{count} more evaluations")
    return len(seen) - 1


def test_removing_the_limit_gives_the_guest_its_cpus_back(env, measure) -> None:
    if env.momd is None:
        env.start_momd()
        env.wait_published()
    env.set_limit(40)
    wait_until(lambda: env.sched()["vcpu_quota"] != -1, 30, "a quota for the limit of 40 %")
    set_at = time.time()
    env.set_limit(None)
    wait_until(lambda: (env.sched()["vcpu_quota"], env.sched()["vcpu_period"])
               == (-1, DEFAULT_PERIOD), 30, "the quota to be lifted", interval=0.02)
    measure("cputune: limit removed -> unlimited in libvirt",
            f"{1000 * (time.time() - set_at):.0f} ms")
    assert env.cgroup_bandwidth() == {(-1, DEFAULT_PERIOD)}
    wait_until(lambda: env.props()["VcpuUserLimit"] == 100, 10, "momd to see no limit")


def _set_cpu_tune(env: CpuTuneE2E, settings: dict[str, Variant]):
    """SetCpuTune as root; skips when polkitd lost our action (see replaced_actions_reason)."""
    reply = env.bus.call(env.path, GUEST_INTERFACE, "SetCpuTune", "a{sv}", [settings])
    if reply.message_type == MessageType.ERROR and reply.error_name == ACCESS_DENIED \
            and replaced_actions_reason(ACTION_CONTROL_CPUTUNE):
        pytest.skip(replaced_actions_reason(ACTION_CONTROL_CPUTUNE))
    return reply


def test_set_cpu_tune_by_hand_applies_and_refuses_out_of_range(env) -> None:
    if env.momd is None:
        env.start_momd()
        env.wait_published()
    # The policy asks for no limit: momd applies a manual setting, and the
    # next evaluation gives the policy's -1 back, as a vdsm-managed host would.
    reply = _set_cpu_tune(env, {"quota": Variant("x", 30000), "period": Variant("t", 60000)})
    assert reply.message_type == MessageType.METHOD_RETURN, (reply.error_name, reply.body)
    wait_until(lambda: env.log_text().count(
        f"Set CPU tuning of guest {GUEST_NAME} ({env.uuid}): vcpu_quota 30000") >= 1, 10,
        "momd to log the manual setting")
    wait_until(lambda: env.sched()["vcpu_quota"] == -1, 30,
               "the policy to take the guest back to no limit",
               details=lambda: env.log_text()[-2000:])
    assert "vcpu_quota 30000" in env.log_text() and "vcpu_period 60000" in env.log_text()
    for settings in ({"quota": Variant("x", 500)}, {"period": Variant("t", 2000000)},
                     {"shares": Variant("t", 5)}):
        reply = _set_cpu_tune(env, settings)
        assert reply.message_type == MessageType.ERROR and reply.error_name == INVALID_ARGUMENT, \
            (settings, reply.error_name, reply.body)
