"""ExplainLog: the record of every control applied, on the real engine,
controllers and shipped policies over the simulation (lab mode: simulated
time, so ten minutes of a host take a moment)."""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

from momservice.engine.explain import ExplainLog
from momservice.policy import Entity, PolicySet
from momservice.policy_files import find_policy_files, read_policy_texts
from momservice.simulator.lab import EPOCH, Lab

SHIPPED = Path(__file__).resolve().parents[2] / "policies"


def shipped() -> PolicySet:
    return PolicySet(read_policy_texts(find_policy_files([SHIPPED])))


def control_lines(path: Path, control: str) -> set[int]:
    return {n for n, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(rf'\.Control "{control}"', line)}


def lab_with_log(run, policies: PolicySet, minutes: float = 10, **log_options):
    lab = Lab("sim:///", policies)
    log = ExplainLog(lab.engine, locate=lambda name: str(SHIPPED / f"{name}.policy"),
                     **log_options)
    lab.engine.observers.append(log)

    async def go():
        await lab.start()
        await lab.run(minutes * 60, step=5.0, record=True)
        await lab.stop()
    run(go())
    return lab, log


def test_every_balloon_step_is_recorded_with_its_policy_line_and_inputs(run):
    lab, log = lab_with_log(run, shipped(), length=10_000)
    applied: dict[str, list[tuple[float, str, int]]] = {}
    for e in lab.record.evaluations:
        for uuid, kib in e.applied_balloons.items():
            applied.setdefault(uuid, []).append((e.started, e.reason, kib))
    assert applied, "the default scenario must move balloons"
    lines = control_lines(SHIPPED / "02-balloon.policy", "balloon_target")
    assert set(applied) == set(log.records) - {"host"}
    for uuid, steps in applied.items():
        ring = log.records[uuid]
        assert [(r.time, r.reason, c.after) for r in ring for c in r.changes] == steps
        for record in ring:
            (change,) = record.changes
            assert change.control == "balloon_target"
            assert change.policy == "02-balloon" and change.line in lines
            assert change.file == str(SHIPPED / "02-balloon.policy")
            inputs = record.inputs.as_dict()
            # "From" is where the balloon stood in the sample the policy read.
            assert change.before == inputs["balloon_cur"]
            assert {"balloon_cur", "balloon_max", "mem_unused"} <= inputs.keys()
            assert "mem_free" in record.host.as_dict()
            assert not record.dry_run


def test_ksm_settings_are_recorded_for_the_host(run):
    lab, log = lab_with_log(run, shipped())
    started = [e for e in lab.record.evaluations if e.applied_ksm.get("run") == 1]
    assert started
    records = {r.time: r for r in log.story("host")}
    changes = {c.control: c for c in records[started[0].started].changes}
    assert changes["ksm_run"].after == 1 and changes["ksm_run"].before == 0
    assert changes["ksm_run"].policy == "03-ksm"
    assert changes["ksm_run"].line in control_lines(SHIPPED / "03-ksm.policy", "ksm_run")


def test_a_guests_records_are_bounded_in_number_and_age(run):
    lab, log = lab_with_log(run, PolicySet({"shrink": (
        "(with Guests guest\n"
        "    (guest.Control \"balloon_target\" (- guest.balloon_cur 4096)))\n")}),
        minutes=5, length=4, max_age=120)
    assert log.records
    now = EPOCH + lab.simulation.now
    for uuid, ring in log.records.items():
        assert len(ring) <= 4
        story = log.story(uuid, now=now)
        assert story and all(now - r.time <= 120 for r in story)
        assert [r.time for r in story] == sorted(r.time for r in story)
        # Each step shrinks by 4 MiB from where the sample stood, set at line 2.
        for record in story:
            (change,) = record.changes
            assert change.after == change.before - 4096
            assert (change.policy, change.line) == ("shrink", 2)
    # Everything is older than the bound a day later.
    uuid = next(iter(log.records))
    assert log.story(uuid, now=now + 86400) == []
    assert log.story(uuid, since=now + 1, now=now) == []


def test_a_guest_that_goes_takes_its_records_with_it(run):
    lab, log = lab_with_log(run, PolicySet({"shrink": (
        "(with Guests guest (guest.Control \"balloon_target\" (- guest.balloon_cur 4096)))")}),
        minutes=1)
    uuid = next(iter(log.records))
    lab.engine.guest_removed(uuid)
    assert uuid not in log.records and log.story(uuid) == []


def test_a_thousand_guests_with_full_rings_stay_within_a_few_mib():
    """The bound of the docs: 1000 guests, each with explain-length (20)
    records, every one changing at every evaluation."""
    from momservice.engine.core import Engine, Evaluation
    from momservice.controllers.balloon import BalloonController
    from momservice.policy.policyset import EvaluationResult

    policies = shipped()
    engine = Engine(hypervisor=None, host_collector=None, policies=policies,
                    mechanisms=[BalloonController(None)])
    engine.host.add_sample({"mem_free": 2 << 20, "mem_available": 64 << 20, "swap_out": 0,
                            "mem_pressure_some": 1.5}, 0.0)
    for n in range(1000):
        guest = engine.guests[f"u{n}"] = Entity.guest({"name": f"g{n}", "uuid": f"u{n}"})
        guest.add_sample({"balloon_cur": 4 << 20, "balloon_max": 4 << 20, "balloon_min": 0,
                          "mem_available": 4 << 20, "mem_unused": 1 << 20,
                          "major_fault": 0, "minor_fault": 0, "swap_in": 0, "swap_out": 0,
                          "mem_usable": 2 << 20, "rss": 3 << 20}, 0.0)
    log = ExplainLog(engine)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for step in range(log.length):
            result = EvaluationResult(control_origins={"balloon_target": {
                g: ("02-balloon", 180) for g in engine.guests.values()}})
            evaluation = Evaluation(float(step), 0.001, "interval", result, False)
            # Distinct ints, as real targets are (small ones would be shared).
            evaluation.applied["Balloon"] = {u: (3 << 20) + n * 1000 + step
                                             for n, u in enumerate(engine.guests)}
            log.evaluated(evaluation)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert sum(len(r) for r in log.records.values()) == 1000 * log.length
    print(f"1000 guests x {log.length} records: {used / 2**20:.1f} MiB")
    assert used < 7 * 2**20   # README: about 5.5 MiB


def test_a_dry_run_momd_records_what_it_would_have_applied(run):
    lab = Lab("sim:///", shipped(), dry_run=True)
    log = ExplainLog(lab.engine)
    lab.engine.observers.append(log)

    async def go():
        await lab.start()
        await lab.run(600, step=5.0, record=True)
        await lab.stop()
    run(go())
    stories = [r for uuid, ring in log.records.items() for r in ring if uuid != "host"]
    assert stories and all(r.dry_run for r in stories)
    assert all(c.file is None for r in stories for c in r.changes)  # no locate given


def test_a_value_json_cannot_carry_is_left_out():
    from momservice.engine.explain import Change, Inputs
    assert Inputs(("a", "b", "c"), (1.5, float("nan"), None)).as_dict() == {"a": 1.5}
    assert Change("x", float("inf"), 2, "p", 1, None).as_dict()["from"] is None


def test_records_share_their_inputs_while_they_repeat():
    from momservice.engine.core import Engine, Evaluation
    from momservice.controllers.balloon import BalloonController
    from momservice.policy.policyset import EvaluationResult

    engine = Engine(hypervisor=None, host_collector=None, policies=shipped(),
                    mechanisms=[BalloonController(None)])
    engine.host.add_sample({"mem_free": 2 << 20, "mem_available": 64 << 20}, 0.0)
    sample = {"balloon_cur": 4 << 20, "balloon_max": 4 << 20, "mem_available": 3 << 20,
              "mem_unused": 1 << 20, "major_fault": 0, "swap_in": 0}
    for name in ("steady", "moving"):
        engine.guests[name] = Entity.guest({"name": name, "uuid": name})
        engine.guests[name].add_sample(dict(sample), 0.0)
    log = ExplainLog(engine)
    for step in range(3):
        if step == 2:
            engine.guests["moving"].add_sample({**sample, "mem_available": 2 << 20}, 2.0)
        evaluation = Evaluation(float(step), 0.001, "interval", EvaluationResult(), False)
        evaluation.applied["Balloon"] = {"steady": (3 << 20) + step, "moving": (3 << 20) + step}
        log.evaluated(evaluation)
    steady, moving = log.records["steady"], log.records["moving"]
    assert steady[0].values is steady[1].values is steady[2].values
    assert moving[0].values is moving[1].values and moving[2].values is not moving[1].values
    assert moving[1].inputs.as_dict()["mem_available"] == 3 << 20
    assert moving[2].inputs.as_dict()["mem_available"] == 2 << 20
    assert [c.after for r in moving for c in r.changes] == [(3 << 20) + n for n in range(3)]
