"""The memory-pressure trigger in the lab: PSI stall, momd's trigger line, evaluations."""

from __future__ import annotations

from pathlib import Path

import pytest

from momservice.engine.pressure import DEFAULT_TRIGGER
from momservice.policy import PolicySet
from momservice.policy_files import find_policy_files, read_policy_texts
from momservice.simulator.lab import Lab
from momservice.simulator.pressure_trigger import PsiTriggerModel, parse_trigger
from momservice.simulator.scenario import generated
from momservice.simulator.simulation import Simulation

# MoM's shipped set: on this host it lets pressure build between two long
# intervals, which the trigger must catch (the defaults keep the host out of
# pressure here altogether).
SHIPPED = Path(__file__).resolve().parents[2] / "policies" / "mom"


def test_trigger_line_is_read_as_the_kernel_reads_it():
    assert parse_trigger(DEFAULT_TRIGGER) == ("some", 0.15, 1.0)
    assert parse_trigger("full 300000 2000000") == ("full", 0.3, 2.0)
    for bad in ("some 150000", "half 1 2", "some x 1000000", "some 2000000 1000000"):
        with pytest.raises(ValueError, match="PSI trigger"):
            parse_trigger(bad)


def test_trigger_fires_past_the_threshold_and_once_per_window():
    trigger = PsiTriggerModel("some 150000 1000000")
    stall = 0.0
    fired = []
    for tenth in range(1, 41):
        now = tenth / 10
        # 10 % stalled for the first second, then 50 %, then none after 3 s.
        stall += 0.01 if now <= 1.0 else (0.05 if now <= 3.0 else 0.0)
        if trigger.observe(now, stall, 0.0):
            fired.append(round(now, 1))
    # Below the threshold the first second; over it from 1.2 s (>= 150 ms in the
    # last second), then at most once a second while it lasts; quiet once it stops.
    assert fired == [1.2, 2.2, 3.2]
    assert trigger.events == 3


def test_simulation_stops_its_step_where_the_trigger_fires():
    # No policy: the overcommitted host comes to swap, and stalls.
    sim = Simulation(generated(guests=4, overcommit=2.0, seed=1))
    sim.watch_pressure(DEFAULT_TRIGGER)
    advanced = 0.0
    while not sim.pressure_fired and sim.now < 3600:
        advanced = sim.step(60.0, until_pressure=True)
    assert sim.pressure_fired and 0 < advanced < 60.0
    assert sim.host.stall_some_seconds > 0.15
    # Without until_pressure the step runs to its end (and still says it fired).
    assert sim.step(30.0) == pytest.approx(30.0)


def run_lab(run, trigger: str | None) -> Lab:
    policies = PolicySet(read_policy_texts(find_policy_files([SHIPPED])))
    # A long policy interval: between two, only the trigger can make the engine act.
    lab = Lab("sim:///", policies, scenario=generated(guests=6, overcommit=1.8, seed=2),
              policy_interval=120.0, pressure_trigger=trigger)

    async def go():
        await lab.start()
        await lab.run(900.0, step=10.0)
        await lab.stop()

    run(go())
    return lab


def test_pressure_trigger_makes_the_engine_evaluate_at_once(run):
    lab = run_lab(run, DEFAULT_TRIGGER)
    counts = lab.record.evaluations_by_reason()
    assert counts["start"] == 1 and counts["interval"] == 900 // 120
    assert counts.get("pressure", 0) == len(lab.record.pressure_events) > 0
    pressure = [e for e in lab.record.evaluations if e.reason == "pressure"]
    # Each came when the trigger fired (engine time is simulated time)...
    first = pressure[0].started - lab.engine.clock() + lab.simulation.now
    assert first == pytest.approx(lab.record.pressure_events[0])
    # ...on fresh samples, and the policies acted on them.
    assert any(e.applied_balloons for e in pressure)

    quiet = run_lab(run, None)
    assert quiet.record.evaluations_by_reason() == {"start": 1, "interval": 900 // 120}
    assert quiet.record.pressure_events == []
