"""SimHypervisor, SimHostCollector and the KSM directory, through momd's own parts."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from momservice.collectors.ksm import read_ksm
from momservice.config import Config
from momservice.controllers import BalloonController, KsmController
from momservice.fields import GUEST_FIELDS, GUEST_REQUIRED_FIELDS, HOST_FIELDS
from momservice.hypervisor import HypervisorError, HypervisorInterface
from momservice.simulator import (Scenario, SimHostCollector, SimHypervisor,
                                  make_simulation_parts)
from momservice.simulator.guest_model import MiB
from tests.helpers.hypervisor_listener import wait_for

URI = "sim:///?guests=4&overcommit=1.5&seed=2"


class Listener:
    def __init__(self) -> None:
        self.added = []
        self.removed = []
        self.connection = []

    def guest_added(self, info) -> None:
        self.added.append(info)

    def guest_removed(self, uuid) -> None:
        self.removed.append(uuid)

    def connection_changed(self, connected) -> None:
        self.connection.append(connected)


@pytest.fixture
def parts():
    hv, collector, ksm_dir = make_simulation_parts(URI, realtime=False)
    yield hv, collector, ksm_dir
    asyncio.run(hv.close())


def test_parts(parts):
    hv, collector, ksm_dir = parts
    assert isinstance(hv, HypervisorInterface) and isinstance(hv, SimHypervisor)
    assert isinstance(collector, SimHostCollector)
    assert collector.ksm_dir == ksm_dir and ksm_dir.is_dir()
    assert not str(ksm_dir).startswith("/sys")
    assert hv.uri == URI and hv.connected and hv.qemu_pids() == []
    with pytest.raises(ValueError, match="guests"):
        make_simulation_parts("sim:///?guests=0")


def test_start_reports_guests_and_collect_gives_balloon_statistics(run, parts):
    hv, _, _ = parts
    listener = Listener()

    async def go():
        await hv.start(listener)
        return await hv.collect()

    samples = run(go())
    assert len(listener.added) == 4
    assert set(hv.guests()) == {i.uuid for i in listener.added} == set(samples)
    assert all(i.pid == 0 for i in listener.added)
    for info in listener.added:
        sample = samples[info.uuid]
        assert GUEST_REQUIRED_FIELDS <= set(sample) <= GUEST_FIELDS
        assert {"mem_usable", "disk_caches", "rss", "stats_age"} <= set(sample)
        assert sample["balloon_min"] == info.balloon_min
        assert sample["balloon_cur"] == sample["balloon_max"] == 4096 * MiB
        assert all(isinstance(v, (int, float)) for v in sample.values())
    assert any(i.balloon_min > 0 for i in listener.added)   # a guarantee in the mix


def test_set_balloon_target(run, parts):
    hv, _, _ = parts

    async def go():
        await hv.start(Listener())
        uuid = next(iter(hv.guests()))
        await hv.set_balloon_target(uuid, 3000 * MiB)
        before = (await hv.collect())[uuid]["balloon_cur"]
        hv.step(1.0)
        after = (await hv.collect())[uuid]["balloon_cur"]
        await hv.set_balloon_target(uuid, 10**12)     # clamped like a real balloon
        hv.step(30.0)
        top = (await hv.collect())[uuid]["balloon_cur"]
        with pytest.raises(HypervisorError, match="no simulated guest"):
            await hv.set_balloon_target("00000000-0000-0000-0000-000000000000", 1)
        await hv.close()
        with pytest.raises(HypervisorError):
            await hv.set_balloon_target(uuid, 1)
        return before, after, top, await hv.collect(), hv.connected

    before, after, top, closed, connected = run(go())
    assert before == 4096 * MiB
    # The default balloon rate, one second.
    assert after == before - int(Scenario.balloon_rate_mib_s) * MiB
    assert top == 4096 * MiB
    assert closed == {} and not connected


def test_host_sample(parts):
    hv, collector, _ = parts
    sample = collector.collect(qemu_pids=[1, 2])
    assert set(sample) == HOST_FIELDS
    scenario = hv.driver.scenario
    assert sample["mem_available"] == scenario.host_memory_mib * MiB
    assert sample["mem_unused"] <= sample["mem_free"] <= sample["mem_available"]
    assert sample["swap_total"] == scenario.host_swap_mib * MiB
    assert sample["cpu_count"] == scenario.cpu_count
    assert sample["ksm_run"] == 0 and sample["ksm_pages_sharing"] == 0
    assert sample["swap_in"] == sample["swap_out"] == 0
    assert sample["ksm_shareable"] == pytest.approx(
        sum(g.resident for g in hv.simulation.guests.values()), abs=1)


def test_host_rates_are_per_interval_of_simulated_time():
    # A small host: it swaps, and with KSM running ksmd uses CPU.
    hv, collector, ksm_dir = make_simulation_parts(
        "sim:///?guests=4&host_mib=6144&seed=2", realtime=False)
    try:
        collector.collect()
        (ksm_dir / "run").write_text("1\n")
        (ksm_dir / "pages_to_scan").write_text("1500\n")
        (ksm_dir / "sleep_millisecs").write_text("20\n")
        hv.step(120.0)
        sample = collector.collect()
        assert sample["swap_out"] > 0 and sample["swap_usage"] > 0
        assert sample["mem_pressure_some"] > 0
        # 1500 pages / 20 ms = 75000 pages/s: half of what one CPU scans.
        assert sample["ksmd_cpu_usage"] == pytest.approx(50.0)
        assert sample["ksm_pages_sharing"] > 0
        again = collector.collect()       # no time passed: no activity
        assert again["swap_in"] == again["swap_out"] == 0
        assert again["ksmd_cpu_usage"] == 0
    finally:
        asyncio.run(hv.close())
    assert not ksm_dir.exists()            # closing removed the temporary directory


def test_real_ksm_controller_drives_the_simulated_ksm(run, parts):
    hv, collector, ksm_dir = parts
    controller = KsmController(ksm_dir)
    sim = hv.simulation

    async def go():
        written = await controller.apply({"ksm_run": 1, "ksm_pages_to_scan": 1250,
                                          "ksm_sleep_millisecs": 10})
        assert written == {"pages_to_scan": 1250, "sleep_millisecs": 10, "run": 1}
        assert collector.collect()["ksm_run"] == 1        # seen at once, like sysfs
        hv.step(60.0)
        shared = read_ksm(ksm_dir)
        assert shared["ksm_pages_sharing"] == sim.ksm.pages_sharing > 0
        # A shorter number over a longer one (the controller does not truncate).
        assert await controller.apply({"ksm_pages_to_scan": 64}) == {"pages_to_scan": 64}
        hv.step(1.0)
        assert sim.ksm.pages_to_scan == 64
        assert read_ksm(ksm_dir)["ksm_pages_to_scan"] == 64
        # merge_across_nodes while pages are shared: a file cannot say EBUSY, so
        # the write seems to succeed, and the simulation takes it back.
        assert await controller.apply({"ksm_merge_across_nodes": 0}) == \
            {"merge_across_nodes": 0}
        collector.collect()
        assert sim.ksm.merge_across_nodes == 1
        assert read_ksm(ksm_dir)["ksm_merge_across_nodes"] == 1
        # What the shipped policy does instead: unmerge (run 2), then change it.
        assert await controller.apply({"ksm_run": 2}) == {"run": 2}
        assert collector.collect()["ksm_pages_shared"] == 0      # at once, like the kernel
        assert await controller.apply({"ksm_merge_across_nodes": 0, "ksm_run": 1}) == \
            {"merge_across_nodes": 0, "run": 1}
        hv.step(10.0)
        assert sim.ksm.merge_across_nodes == 0 and sim.ksm.run == 1
        assert sim.ksm.pages_sharing > 0

    run(go())


def test_a_refused_write_is_taken_back(parts, caplog):
    hv, collector, ksm_dir = parts
    sim = hv.simulation
    sim.ksm.set_run(1)
    sim.ksm.pages_to_scan, sim.ksm.sleep_millisecs = 2000, 10
    hv.step(30.0)
    assert sim.ksm.pages_shared > 0
    (ksm_dir / "merge_across_nodes").write_text("0\n")     # like EBUSY in the kernel
    (ksm_dir / "sleep_millisecs").write_text("soon\n")
    (ksm_dir / "run").write_text("7\n")
    collector.collect()
    assert sim.ksm.merge_across_nodes == 1 and sim.ksm.sleep_millisecs == 10
    assert sim.ksm.run == 1
    assert read_ksm(ksm_dir)["ksm_merge_across_nodes"] == 1
    assert (ksm_dir / "sleep_millisecs").read_text() == "10\n"
    assert "EBUSY" in caplog.text and "soon" in caplog.text
    (ksm_dir / "run").write_text("2\n")                     # unmerges at once
    assert collector.collect()["ksm_pages_shared"] == 0


def test_wall_clock_mode_advances_by_itself(run):
    hv, _, _ = make_simulation_parts("sim:///?guests=2&step=0.05&speed=20", realtime=True)
    listener = Listener()

    async def go():
        await hv.start(listener)
        await asyncio.sleep(0.5)
        moving = hv.now
        await hv.close()
        stopped = hv.now
        await asyncio.sleep(0.2)
        return moving, stopped, hv.now

    moving, stopped, later = run(go())
    assert 4.0 <= moving <= 12.0           # about 0.5 s x 20
    assert later == stopped                # closing stopped the clock


def test_lab_mode_stands_still(run, parts):
    hv, _, _ = parts

    async def go():
        await hv.start(Listener())
        await asyncio.sleep(0.2)
        return hv.now

    assert run(go()) == 0.0


def test_resync_reports_guests_that_come_and_go(run, parts):
    hv, _, _ = parts
    listener = Listener()

    async def go():
        await hv.start(listener)
        uuid, guest = next(iter(hv.simulation.guests.items()))
        del hv.simulation.guests[uuid]
        await hv.resync()
        assert listener.removed == [uuid] and uuid not in hv.guests()
        hv.simulation.guests[uuid] = guest
        await hv.resync()
        assert listener.added[-1].uuid == uuid

    run(go())


def test_balloon_controller_through_the_simulated_hypervisor(run, parts):
    hv, _, _ = parts

    async def go():
        await hv.start(Listener())
        samples = await hv.collect()
        controller = BalloonController(hv, floor_kib=1024 * MiB)
        requests = {u: {"balloon_target": 0} for u in samples}
        applied = await controller.apply(requests, samples)
        hv.step(60.0)
        return applied, await hv.collect()

    applied, samples = run(go())
    for uuid, sample in samples.items():
        low = max(sample["balloon_min"], 1024 * MiB)
        assert applied[uuid] == low
        assert sample["balloon_cur"] >= low


def test_service_runs_on_the_simulated_parts(run, tmp_path):
    """The service with the parts injected: KSM goes to the simulated directory."""
    from momservice.assembly import build_service

    hv, collector, ksm_dir = make_simulation_parts("sim:///?guests=3&host_mib=4096",
                                                   realtime=True)
    policies = Path(__file__).resolve().parents[2] / "policies"
    config = dataclasses.replace(Config.defaults(), state_dir=tmp_path / "state",
                                 policy_dir=policies, policy_engine_interval=0.2,
                                 host_monitor_interval=0.1, guest_monitor_interval=0.1,
                                 guest_manager_interval=0.5)
    service = build_service(config, hypervisor=hv, host_collector=collector,
                            pressure_path=None)
    ksm = service.mechanisms["KSM"]
    assert ksm.ksm_dir == ksm_dir and ksm in service.engine.mechanisms

    async def go():
        await service.start()
        try:
            await wait_for(lambda: len(service.engine.guests) == 3, timeout=5)
            await wait_for(lambda: hv.simulation.ksm.run == 1, timeout=5)
            written = await service.set_ksm({"pages_to_scan": 321})
            # Nothing else ran since the write: the simulation takes it in now.
            collector.collect()
            assert hv.simulation.ksm.pages_to_scan == 321
            return written
        finally:
            await service.stop()

    assert run(go()) == {"pages_to_scan": 321}
