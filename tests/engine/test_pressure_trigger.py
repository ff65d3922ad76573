"""Memory pressure: a real PSI trigger makes the engine act at once.

Real pressure comes from a process thrashing the page cache inside a small
cgroup (tests/helpers/pressure_cgroup.py); the trigger watches that cgroup's
own PSI file, the same interface as /proc/pressure/memory, so the host's
other work does not decide the outcome.  Guests are libvirt test-driver
guests; the host statistics come from a fake /proc tree that shows the
host short of memory, so the balloon policy shrinks guests when it runs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from momservice.collectors import HostCollector
from momservice.controllers import BalloonController
from momservice.engine.core import Engine
from momservice.engine.pressure import PressureTrigger
from momservice.hypervisor.libvirt import LibvirtHypervisor
from momservice.policy import PolicySet
from momservice.policy_files import find_policy_files, read_policy_texts
from tests.helpers.fake_host import FakeHost
from tests.helpers.hypervisor_listener import wait_for
from tests.helpers.libvirt_node import guest_specs, node_uri, write_node_xml
from tests.helpers.pressure_cgroup import ThrashingCgroup

# MoM's shipped set: on a pressed host it moves every balloon a bounded step
# at each evaluation, so each trigger is followed by a balloon command (the
# defaults reach their targets at once and then, rightly, leave them alone).
SHIPPED = Path(__file__).resolve().parents[2] / "policies" / "mom"
GiB = 1024 * 1024


class TimedHypervisor(LibvirtHypervisor):
    """Notes when each balloon command is sent (monotonic time)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[float, str, int]] = []

    async def set_balloon_target(self, uuid: str, kib: int) -> None:
        self.sent.append((time.monotonic(), uuid, kib))
        await super().set_balloon_target(uuid, kib)


def test_trigger_registers_and_stops_cleanly(tmp_path: Path) -> None:
    async def body() -> str | None:
        trigger = PressureTrigger(lambda: None)
        started = trigger.start(asyncio.get_running_loop())
        accepted = trigger.trigger
        trigger.stop()
        trigger.stop()
        assert not trigger.active
        return accepted if started else None

    accepted = asyncio.run(body())
    if not Path("/proc/pressure/memory").exists():
        assert accepted is None
    else:
        assert accepted is not None and accepted.startswith("some ")


def test_unavailable_trigger_is_reported_not_raised(tmp_path: Path, caplog) -> None:
    async def body() -> bool:
        trigger = PressureTrigger(lambda: None, tmp_path / "no-such-pressure-file")
        return trigger.start(asyncio.get_running_loop())

    assert asyncio.run(body()) is False
    assert "reacting at the policy interval only" in caplog.text


@pytest.mark.timeout(120)
def test_real_pressure_moves_balloons_within_a_second(tmp_path: Path) -> None:
    reason = ThrashingCgroup.unavailable_reason()
    if reason:
        pytest.skip(f"cannot provoke real memory pressure here: {reason}")
    node = write_node_xml(tmp_path / "node.xml", guest_specs(4, min_guarantee_every=0))
    fake_host = FakeHost(tmp_path / "host")
    fake_host.set_memory(64 * GiB, int(64 * GiB * 0.08))
    policies = PolicySet(read_policy_texts(find_policy_files([SHIPPED])))

    async def body(cgroup: ThrashingCgroup) -> list[float]:
        hv = TimedHypervisor(node_uri(node))
        engine = Engine(hv, HostCollector(fake_host.proc, fake_host.sys), policies,
                        [BalloonController(hv, floor_kib=0)],
                        host_interval=3600, guest_interval=3600, manager_interval=3600,
                        policy_interval=3600, history_length=1)
        await engine.start()
        trigger = PressureTrigger(engine.pressure_rose, cgroup.pressure_file)
        assert trigger.start(asyncio.get_running_loop()), "the kernel refused the trigger"
        latencies: list[float] = []
        try:
            hv.sent.clear()
            cgroup.start()
            deadline = time.monotonic() + 30
            while len(latencies) < 3 and time.monotonic() < deadline:
                count = len(hv.sent)
                await wait_for(lambda: len(hv.sent) > count, timeout=30,
                               what="a balloon command after a pressure trigger")
                evaluation = engine.last_evaluation
                assert evaluation.reason == "pressure"
                latencies.append(hv.sent[count][0] - evaluation.trigger_time)
                await asyncio.sleep(0.1)
        finally:
            cgroup.stop()
            trigger.stop()
            await engine.stop()
        return latencies

    with ThrashingCgroup(tmp_path) as cgroup:
        latencies = asyncio.run(body(cgroup))
    print(f"PSI trigger ({cgroup.pressure_file.name}) to balloon command: "
          + ", ".join(f"{1000 * t:.1f} ms" for t in latencies))
    assert latencies and all(t >= 0 for t in latencies)
