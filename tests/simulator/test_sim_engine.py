"""The real engine, controllers and shipped policies over the simulation, in lab mode."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from momservice.policy import PolicySet
from momservice.policy_files import find_policy_files, read_policy_texts
from momservice.simulator.lab import EPOCH, Lab
from momservice.simulator.scenario import generated

SHIPPED = Path(__file__).resolve().parents[2] / "policies"


def shipped_policies() -> PolicySet:
    return PolicySet(read_policy_texts(find_policy_files([SHIPPED])))


def host_free(lab: Lab) -> float:
    host = lab.simulation.host
    return (host.unused + host.cache) / host.total


def test_balloons_move_under_pressure_with_the_shipped_policies(run):
    lab = Lab("sim:///", shipped_policies())
    sim = lab.simulation

    async def go():
        await lab.start()
        assert host_free(lab) > 0.2
        await lab.run(10 * 60, step=5.0, record=True)
        await lab.stop()

    run(go())
    record = lab.record
    assert record.errors == []
    assert all(e.result.error is None and not e.result.guest_errors
               for e in record.evaluations)
    # Pressure came (the default scenario's spike and filling caches)...
    assert min(h["mem_free"] / h["mem_available"] for h in record.host) < 0.2
    # ...and the policies inflated balloons: targets below the maximum, applied.
    applied = [(u, t) for e in record.evaluations for u, t in e.applied_balloons.items()]
    assert applied
    assert any(t < sim.guests[u].max_kib for u, t in applied)
    assert sum(g.max_kib - g.balloon_cur for g in sim.guests.values()) > 1024 * 1024
    # ...and KSM was started through the real controller and the simulated sysfs.
    assert any(e.applied_ksm.get("run") == 1 for e in record.evaluations)
    assert sim.ksm.pages_sharing > 0
    # The engine's samples carry simulated time.
    assert lab.engine.host.times[-1] == pytest.approx(EPOCH + sim.now)


def test_without_the_policies_nothing_moves(run):
    """The counter-check: the balloons above moved because of the policies."""
    lab = Lab("sim:///", PolicySet({}))
    sim = lab.simulation

    async def go():
        await lab.start()
        await lab.run(10 * 60, step=5.0)
        await lab.stop()

    run(go())
    assert all(g.balloon_cur == g.max_kib for g in sim.guests.values())
    assert sim.host.swap_usage > 0       # and the host ends up swapping


def test_the_policies_keep_the_host_out_of_swap(run):
    with_policies = Lab("sim:///", shipped_policies())

    async def go():
        await with_policies.start()
        await with_policies.run(30 * 60, step=10.0)
        await with_policies.stop()

    run(go())
    host = with_policies.simulation.host
    assert host.swap_usage == 0 and host.pressure_full < 1.0


def test_lab_runs_are_reproducible(run):
    def one_run(seed):
        lab = Lab(f"sim:///?guests=6&overcommit=1.6&seed={seed}", shipped_policies())

        async def go():
            await lab.start()
            await lab.run(15 * 60, step=10.0, record=True)
            await lab.stop()

        run(go())
        return lab.record.host, lab.record.guests, [
            (e.applied_balloons, e.applied_ksm) for e in lab.record.evaluations]

    first = one_run(3)
    assert one_run(3) == first
    assert one_run(4) != first


def test_speed_one_simulated_hour_of_50_guests(run, capsys):
    """Printed, not asserted: the lab target is under 30 s for this run."""
    scenario = generated(guests=50, overcommit=1.5, seed=1)
    lab = Lab("sim:///?guests=50", shipped_policies(), scenario=scenario)

    async def go():
        await lab.start()
        await lab.run(3600.0, step=10.0)
        await lab.stop()

    started = time.perf_counter()
    run(go(), timeout=300)
    elapsed = time.perf_counter() - started
    assert lab.simulation.now == pytest.approx(3600.0)
    assert lab.record.errors == []
    with capsys.disabled():
        print(f"\n[simulator speed] 1 simulated hour, 50 guests, 10 s steps, real engine and "
              f"shipped policies: {elapsed:.2f} s wall clock (target < 30 s); "
              f"{len(lab.record.evaluations)} evaluations")
