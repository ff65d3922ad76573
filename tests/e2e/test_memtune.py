"""MemTune on a real guest: momd limits its QEMU's memory cgroup through libvirt,
and the host kernel squeezes the QEMU process.

policy (policies/examples/memtune-reclaim.policy) -> MemTune -> libvirtd
(virDomainSetMemoryParameters) -> the QEMU's cgroup v1 memory.limit_in_bytes /
memory.soft_limit_in_bytes -> the kernel reclaims the QEMU's memory into the
host's swap -> its RSS drops -> the live <memtune> -> momd's MemHardLimit.

Real parts: a private system bus with the real polkitd, momd as a process,
the test's own QEMU libvirtd using the cgroup v1 memory controller
(``QemuLibvirtd(cgroups=("memory",))``: the guests' cgroups inside one of
its own, under this process's cgroup) and a guest of
tests/helpers/guest_image.py that dirties 160 MiB.  The policies are the
shipped 00-defines and the example policy, its tunables set over the bus so
that this roomy host counts as tight, and the guest's balloon as not
answering once its statistics stop (stats period 0): the case the policy is
for.  The squeezed memory goes to swap: a host without swap gets a swap file
for the module (tests/helpers/host_swap.py).  The module holds the machine's
memory-pressure lock, as squeezing a process is memory pressure.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid as uuidlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from momservice.contract import (ACTION_CONTROL_MEMTUNE, GUEST_INTERFACE, INVALID_ARGUMENT,
                                 guest_path)
from momservice.controllers.memtune import QEMU_ALLOWANCE_KIB
from momservice.hypervisor.libvirt_memtune import UNLIMITED_KIB
from tests.e2e.test_real_guests import BusClient, wait_until
from tests.helpers.file_lock import LockBusy
from tests.helpers.guest_image import SerialConsole, domain_type, domain_xml, guest_image_or_skip
from tests.helpers.guest_image import skip_reason as guest_skip_reason
from tests.helpers.host_swap import SwapUnavailable, host_swap
from tests.helpers.momd_process import Momd, momd_config
from tests.helpers.pressure_cgroup import host_memory_pressure
from tests.helpers.polkit_single_action import installed_action
from tests.helpers.private_bus import skip_reason as bus_skip_reason
from tests.helpers.private_bus import system_bus_with_polkit
from tests.helpers.private_libvirtd import find_libvirtd
from tests.helpers.qemu_libvirtd import QemuLibvirtd, cgroup_skip_reason, qemu_processes

REPO = Path(__file__).resolve().parents[2]
GUEST_PREFIX = f"mom-memtune-{os.getpid()}-"
GUEST_MIB = 512
DIRTY_MIB = 160
#: momd's balloon-floor; MemTune's floor is it plus QEMU_ALLOWANCE_KIB.
FLOOR_KIB = 131072
#: The example policy's floor here (memtune_least): just above MemTune's.
POLICY_FLOOR_KIB = 204800
#: A balloon whose statistics are older than this (s) does not answer.
STALE_S = 8
SWAP_MIB = 512
#: What the kernel writes in memory.limit_in_bytes for "no limit" (4 KiB pages).
CGROUP_UNLIMITED = 9223372036854771712


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the end-to-end tests need root"
    if find_libvirtd() is None:
        return "libvirtd is not installed (make deps installs libvirt-daemon)"
    reason = cgroup_skip_reason(("memory",))
    if reason is not None:
        return f"libvirt's qemu driver cannot put the guest in a memory cgroup here: {reason}"
    for tool in ("mkswap", "swapon", "swapoff"):
        if shutil.which(tool) is None:
            return f"{tool} (util-linux) is not installed"
    return bus_skip_reason() or guest_skip_reason()


_reason = _skip_reason()
pytestmark = [pytest.mark.skipif(_reason is not None, reason=_reason or ""),
              pytest.mark.timeout(900)]


def _cgroup_value(directory: Path, name: str) -> int:
    return int((directory / name).read_text().strip())


def _statistics(env: "Env") -> dict[str, Any]:
    props = env.props()
    return {"Statistics": props["Statistics"], "Controls": props["Controls"]}


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


_SET_LINE = re.compile(r"^(\S+ \S+) INFO \S+: Set memory limits of guest (.*?): (.*) "
                       r"\(in (\d+) ms\)$", re.M)


@dataclass
class Env:
    tmp: Path
    libvirtd: QemuLibvirtd
    bus: BusClient
    momd: Momd
    system: Any
    name: str
    uuid: str
    pid: int
    cgroup: Path
    serial: SerialConsole
    swap: str

    @property
    def path(self) -> str:
        return guest_path(self.uuid)

    def props(self) -> dict[str, Any]:
        return self.bus.props(self.path, GUEST_INTERFACE)

    def limit(self) -> int:
        return _cgroup_value(self.cgroup, "memory.limit_in_bytes")

    def soft(self) -> int:
        return _cgroup_value(self.cgroup, "memory.soft_limit_in_bytes")

    def usage(self) -> int:
        return _cgroup_value(self.cgroup, "memory.usage_in_bytes")

    def set_limits(self, **limits: int):
        from dbus_next import Variant
        return self.bus.call(self.path, GUEST_INTERFACE, "SetMemTune", "a{sv}",
                             [{k: Variant("t", v) for k, v in limits.items()}])

    def set_parameters(self, **params: Any) -> None:
        self.bus.set_parameters(**params)

    def log_mark(self) -> int:
        return len(self.momd.log_text())

    def limit_lines(self, mark: int) -> list[tuple[float, str, int]]:
        """(wall-clock time, what was set, libvirt's ms) of each limit momd set since ``mark``."""
        lines = []
        for m in _SET_LINE.finditer(self.momd.log_text()[mark:]):
            when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            lines.append((when, m.group(3), int(m.group(4))))
        return lines


@pytest.fixture(scope="module")
def env(tmp_path_factory, measure):
    image = guest_image_or_skip()
    tmp = tmp_path_factory.mktemp("memtune")
    qemu_before = {pid for pid, _ in qemu_processes()}
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(host_memory_pressure())
        except LockBusy as e:
            pytest.skip(str(e))
        try:
            swap = stack.enter_context(host_swap(SWAP_MIB))
        except SwapUnavailable as e:
            pytest.skip(f"the squeezed memory needs host swap: {e}")
        stack.enter_context(installed_action(ACTION_CONTROL_MEMTUNE, tmp))
        system = stack.enter_context(system_bus_with_polkit(tmp / "sysbus"))
        libvirtd = QemuLibvirtd(tmp / "lvd", cgroups=("memory",))
        stack.callback(libvirtd.stop)
        libvirtd.start(timeout=60)
        conn = libvirtd.client()
        stack.callback(conn.close)
        bus = BusClient(system.address)
        stack.callback(bus.close)

        name, uuid = f"{GUEST_PREFIX}0", str(uuidlib.uuid4())
        serial = SerialConsole(tmp / f"{name}.serial")
        created = time.monotonic()
        conn.create(domain_xml(name, uuid, image, serial.path, memory_mib=GUEST_MIB,
                               dirty_mib=DIRTY_MIB))
        stack.callback(conn.destroy, uuid)
        wait_until(lambda: "usable" in conn.memory_stats(uuid) and serial.memtotal()
                   and f"dirtied {DIRTY_MIB} MiB" in serial.text(), 150, "the guest to boot",
                   details=lambda: serial.text()[-1000:] + libvirtd.qemu_log(name)[-1000:])
        measure("memtune guest ready", f"{time.monotonic() - created:.1f} s "
                f"(domain type {domain_type()})")
        pid = libvirtd.qemu_pids()[name]
        cgroup = libvirtd.qemu_cgroup(pid, "memory")
        assert cgroup is not None, f"QEMU {pid} is in none of the daemon's memory cgroups"

        momd_dir = tmp / "momd"
        policies = momd_dir / "policy-source"
        policies.mkdir(parents=True)
        shutil.copyfile(REPO / "policies" / "00-defines.policy", policies / "00-defines.policy")
        shutil.copyfile(REPO / "policies" / "examples" / "memtune-reclaim.policy",
                        policies / "memtune-reclaim.policy")
        config = momd_config(momd_dir, libvirtd.qemu_uri, engine_interval=1.0,
                             collect_interval=0.3, controllers="MemTune",
                             extra_main=f"balloon-floor = {FLOOR_KIB}\n", policies=policies)
        config.write_text(config.read_text() + "[guest]\ncollectors = GuestQemuProc, "
                          "GuestMemory, GuestBalloon, GuestMemTune\n")
        momd = Momd(system, config, momd_dir / "momd.log")
        stack.callback(momd.stop)
        env = Env(tmp, libvirtd, bus, momd, system, name, uuid, pid, cgroup, serial, swap)
        wait_until(lambda: env.path in bus.guest_objects()
                   and bus.guest_objects()[env.path]["MemUnused"] > 0, 60,
                   "momd to publish the guest", details=lambda: momd.log_text()[-3000:])
        # Fresh statistics every second (momd asks for 5 s when it picks a guest up).
        conn.set_stats_period(uuid, 1)
        env.conn = conn  # type: ignore[attr-defined]
        yield env
    leftovers = [(pid, cmd) for pid, cmd in qemu_processes()
                 if pid not in qemu_before and f"guest={GUEST_PREFIX}" in cmd]
    assert not leftovers, f"QEMU processes left behind: {leftovers}"


def test_the_guest_runs_in_a_memory_cgroup_of_the_test_libvirtd(env, measure) -> None:
    base = env.libvirtd.cgroup_dirs["memory"]
    assert base in env.cgroup.parents and env.cgroup.name.endswith(".libvirt-qemu")
    assert env.limit() == CGROUP_UNLIMITED and env.soft() == CGROUP_UNLIMITED
    assert env.conn.memory_parameters(env.uuid)["hard_limit"] == UNLIMITED_KIB
    props = env.props()
    assert props["MemHardLimit"] == props["MemSoftLimit"] == props["MemSwapHardLimit"] == 0
    assert not {"mem_hard_limit", "mem_soft_limit"} & set(props["Statistics"])
    measure("memtune guest's QEMU", f"RSS {_status_kib(env.pid, 'VmRSS') // 1024} MiB, "
            f"cgroup usage {env.usage() >> 20} MiB; host swap: {env.swap}")


def _hold(env: Env) -> None:
    """The example policy neither squeezes nor releases: the host is never
    tight nor relaxed, and the guest's balloon does not answer."""
    env.set_parameters(memtune_tight=0.0, memtune_relaxed=2.0, memtune_stale_age=STALE_S,
                       memtune_least=POLICY_FLOOR_KIB, memtune_swap_reserve=0)
    env.conn.set_stats_period(env.uuid, 0)
    wait_until(lambda: env.props()["StatsAge"] > STALE_S, 60,
               "the guest's statistics to age (stats period 0)",
               details=lambda: str(env.conn.memory_stats(env.uuid)))


def test_set_mem_tune_by_hand_limits_the_qemu_cgroup(env, measure) -> None:
    _hold(env)
    hard, soft = 448 * 1024, 384 * 1024
    sent = time.monotonic()
    reply = env.set_limits(hard_limit=hard, soft_limit=soft)
    replied = time.monotonic()
    assert reply.error_name is None, reply.body
    # The call returns once libvirt has written the cgroup files.
    assert env.limit() == hard * 1024 and env.soft() == soft * 1024
    params = env.conn.memory_parameters(env.uuid)
    assert (params["hard_limit"], params["soft_limit"], params["swap_hard_limit"]) == (
        hard, soft, UNLIMITED_KIB)
    props = env.props()
    assert (props["MemHardLimit"], props["MemSoftLimit"], props["MemSwapHardLimit"]) == (
        hard, soft, 0)
    measure("SetMemTune by hand", f"{1000 * (replied - sent):.0f} ms from the call to "
            "the reply, the QEMU's cgroup limits written")

    # Below MemTune's floor: refused, nothing written.
    floor = FLOOR_KIB + QEMU_ALLOWANCE_KIB
    reply = env.set_limits(hard_limit=floor - 1024)
    assert reply.error_name == INVALID_ARGUMENT and "floor" in reply.body[0], reply.body
    reply = env.set_limits(soft_limit=hard + 1024)
    assert reply.error_name == INVALID_ARGUMENT and "above mem_hard_limit" in reply.body[0]
    assert env.limit() == hard * 1024

    reply = env.set_limits(hard_limit=0, soft_limit=0)
    assert reply.error_name is None, reply.body
    assert env.limit() == CGROUP_UNLIMITED and env.soft() == CGROUP_UNLIMITED
    assert env.props()["MemHardLimit"] == 0


def test_the_example_policy_squeezes_a_guest_whose_balloon_does_not_answer(env, measure) -> None:
    _hold(env)
    rss_before = _status_kib(env.pid, "VmRSS")
    usage_before = env.usage()
    swap_before = _status_kib(env.pid, "VmSwap")
    consoles_before = len(env.serial.memtotals())
    assert usage_before > POLICY_FLOOR_KIB * 1024 + (32 << 20), (
        f"the guest's QEMU holds only {usage_before >> 20} MiB: nothing to squeeze")
    mark = env.log_mark()
    asked = time.time()
    env.set_parameters(memtune_tight=1.01)        # this host counts as tight now
    first = wait_until(lambda: env.limit() != CGROUP_UNLIMITED and time.time(), 30,
                       "the first limit in the QEMU's cgroup",
                       details=lambda: env.momd.log_text()[-3000:])
    # Down to the policy's floor, or until the QEMU holds less than it (the
    # host's own reclaim may take more once there is swap: v1 reclaims from
    # groups above their soft limit first when the host is short).
    wait_until(lambda: env.limit() == POLICY_FLOOR_KIB * 1024
               or env.props()["Rss"] <= POLICY_FLOOR_KIB, 60,
               "the squeeze to reach the policy's floor",
               details=lambda: f"limit {env.limit()}, usage {env.usage()}, guest "
                               f"{_statistics(env)}\n" + env.momd.log_text()[-3000:])
    # momd logs each change once libvirt's call has returned.
    lines = wait_until(lambda: env.limit_lines(mark), 10, "momd's log lines for the squeeze")
    # Step by step (at most 5 % of the guest's memory a round), hard and soft
    # together, down and never below the floor.
    steps = [re.findall(r"mem_(soft|hard)_limit (\d+) KiB", what) for _, what, _ in lines]
    assert all(len(step) == 2 and step[0][1] == step[1][1] for step in steps), lines
    limits = [int(step[0][1]) for step in steps]
    assert limits == sorted(limits, reverse=True) and limits[-1] >= POLICY_FLOOR_KIB, limits
    assert env.soft() == env.limit()
    assert env.usage() <= env.limit()
    rss_after = _status_kib(env.pid, "VmRSS")
    swapped = _status_kib(env.pid, "VmSwap") - swap_before
    # What the QEMU held above the limit went to swap; its RSS followed.
    assert rss_after < rss_before - 32 * 1024, (rss_before, rss_after)
    assert swapped > 32 * 1024, swapped
    assert POLICY_FLOOR_KIB * 1024 <= env.limit() < usage_before
    # The kernel keeps whole pages of the limit libvirt wrote.
    wait_until(lambda: env.props()["MemHardLimit"] == env.props()["MemSoftLimit"]
               and 0 <= env.props()["MemHardLimit"] - env.limit() // 1024 < 4, 10,
               "momd to publish the limits",
               details=lambda: str(_statistics(env)))
    # The guest lives on, squeezed: it keeps printing.
    wait_until(lambda: len(env.serial.memtotals()) > consoles_before + 2, 30,
               "the squeezed guest to go on printing on its console")
    calls = [ms for _, _, ms in lines]
    measure("memtune squeeze (example policy)",
            f"{len(lines)} steps to {env.limit() >> 20} MiB; each libvirt call (decision to the "
            f"limit written and the QEMU reclaimed) {min(calls)}-{max(calls)} ms; first "
            f"limit in the cgroup {first - asked:.2f} s after the parameter change "
            f"(policy interval 1 s); QEMU RSS {rss_before // 1024} -> {rss_after // 1024} "
            f"MiB, {swapped // 1024} MiB to swap; cgroup usage {usage_before >> 20} -> "
            f"{env.usage() >> 20} MiB")


def test_limits_are_lifted_once_the_balloon_answers_again(env, measure) -> None:
    if env.limit() == CGROUP_UNLIMITED:
        test_the_example_policy_squeezes_a_guest_whose_balloon_does_not_answer(env, measure)
    mark = env.log_mark()
    started = time.monotonic()
    env.conn.set_stats_period(env.uuid, 1)
    wait_until(lambda: env.limit() == CGROUP_UNLIMITED, 60,
               "the limits to be lifted once the balloon answers",
               details=lambda: env.momd.log_text()[-3000:])
    lifted = time.monotonic()
    assert env.soft() == CGROUP_UNLIMITED
    # momd logs the change once libvirt's call has returned: just after.
    lines = wait_until(lambda: [line for line in env.limit_lines(mark)
                                if "mem_hard_limit unlimited" in line[1]], 10,
                       "momd's log line for the lift")
    wait_until(lambda: env.props()["MemHardLimit"] == 0, 10, "momd to publish the lift")
    measure("memtune release (example policy)",
            f"{lifted - started:.1f} s from the guest's statistics restarting to the "
            f"limits lifted (libvirt call {lines[-1][2]} ms)")
