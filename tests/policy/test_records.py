"""Records in the policy language: the disks of ``guest.io_tune`` read with dots,
and their setters turned into the guest's ``io_tune`` control (policy/records.py,
policy/iotune_value.py)."""

from __future__ import annotations

import pytest

from momservice.fields import GUEST_REQUIRED_FIELDS
from momservice.policy import Entity, PolicySet, PolicyTrialError
from momservice.policy.iotune_value import DiskIoTune, IoLimits, IoTuneDevice

MAXIMUM = {"total_bytes_sec": 10485760, "read_iops_sec": 200}


def disk(name: str = "vda", path: str | None = "/images/a.raw", **current: int) -> IoTuneDevice:
    return IoTuneDevice(name, path, IoLimits({"total_bytes_sec": 1048576}), IoLimits(MAXIMUM),
                        IoLimits(current))


def guest(name: str, disks: list | None) -> Entity:
    entity = Entity.guest({"name": name, "uuid": f"uuid-{name}"})
    sample = {f: 1 for f in GUEST_REQUIRED_FIELDS}
    if disks is not None:
        sample["io_tune"] = disks
        sample["io_tune_current"] = [DiskIoTune(d.name, d.path, d.current) for d in disks]
    entity.add_sample(sample)
    return entity


def host() -> Entity:
    entity = Entity.host()
    entity.add_sample({})
    return entity


def evaluate(text: str, *guests: Entity, trial: bool = False, **params):
    return PolicySet({"p": text}).evaluate(host(), list(guests), params, trial=trial)


TO_MAXIMUM = """
(with Guests g
  (if (valid g.io_tune)
      (with g.io_tune tune {
          (defvar top tune.maximum)
          (tune.setTotalBytesSec top.total_bytes_sec)
          (tune.setReadIopsSec top.read_iops_sec)
      })
      0))
"""


def test_attributes_of_a_disk_and_its_limits_read_with_dots():
    g = guest("a", [disk(total_bytes_sec=5)])
    result = evaluate("""
        (with Guests g (with g.io_tune t (+ t.name t.path)))
        (with Guests g (with g.io_tune t
            (+ t.maximum.read_iops_sec t.current.total_bytes_sec)))
        (with Guests g (with g.io_tune_current d d.ioTune.total_bytes_sec))
    """, g)
    assert result.ok, result.error
    assert not result.guest_errors
    assert result.values == [[["vda/images/a.raw"]], [[205]], [[5]]]
    assert not result.guest_controls


def test_setters_become_the_guests_io_tune_control():
    a, b = guest("a", [disk(), disk("vdb", None)]), guest("b", [disk()])
    result = evaluate(TO_MAXIMUM, a, b)
    assert result.ok, result.error
    wanted = {"total_bytes_sec": 10485760, "read_iops_sec": 200}
    assert result.guest_controls[a] == {"io_tune": [
        {"name": "vda", "path": "/images/a.raw", **wanted}, {"name": "vdb", "path": "", **wanted}]}
    # Two guests with equal disks: each gets its own.
    assert result.guest_controls[b] == {"io_tune": [
        {"name": "vda", "path": "/images/a.raw", **wanted}]}


def test_a_guest_without_limits_reads_nil_and_keeps_its_other_controls():
    plain = guest("plain", None)
    result = evaluate(TO_MAXIMUM + '(with Guests g (g.Control "balloon_target" 5))', plain)
    assert result.ok and not result.guest_errors
    assert result.guest_controls[plain] == {"balloon_target": 5}


def test_the_last_setting_wins_and_nil_asks_for_nothing():
    g = guest("a", [disk()])
    result = evaluate("""(with Guests g (with g.io_tune t {
        (t.setTotalIopsSec 5) (t.setTotalIopsSec 7.9)
        (t.setWriteBytesSec 3) (t.setWriteBytesSec nil)
        (t.setReadBytesSec 0)}))""", g)
    assert result.guest_controls[g] == {"io_tune": [
        {"name": "vda", "path": "/images/a.raw", "total_iops_sec": 7, "read_bytes_sec": 0}]}


@pytest.mark.parametrize("call, message", [
    ("(t.setTotalIopsSec \"fast\")", "setTotalIopsSec needs a number"),
    ("(t.setTotalIopsSec 1 2)", "setTotalIopsSec takes 1 argument"),
    ("(t.setSpeed 5)", "disk vda has no method setSpeed"),
    ("t.speed", "has no attribute speed"),
    ("t.maximum.speed", "has no attribute speed"),
])
def test_a_wrong_use_fails_that_guest_only_with_its_line(call, message):
    bad, good = guest("bad", [disk()]), guest("good", [disk()])
    result = evaluate(f"""(with Guests g {{
        (if (== (g.Prop "name") "bad")
            (with g.io_tune t
                {call})
            0)
        (with g.io_tune t (t.setTotalIopsSec 9))}})""", bad, good)
    assert result.ok, result.error
    error = result.guest_errors[bad]
    assert message in error.message and error.line == 4
    assert bad not in result.guest_controls
    assert result.guest_controls[good]["io_tune"][0]["total_iops_sec"] == 9


def test_a_failed_evaluation_applies_no_setting():
    g = guest("a", [disk()])
    result = evaluate("(with Guests g (with g.io_tune t (t.setTotalIopsSec 9))) (+ 1 nil)", g)
    assert not result.ok and not result.guest_controls


def test_a_method_of_something_else_is_still_an_error():
    result = evaluate("(defvar x 5) (x.setTotalIopsSec 3)")
    assert not result.ok and "x has no method setTotalIopsSec" in result.error.message


def test_records_stay_as_collected_across_evaluations_and_trials():
    g = guest("a", [disk(total_iops_sec=1)])
    policies = PolicySet({"p": TO_MAXIMUM})
    policies.try_out(host(), [g])
    first = policies.evaluate(host(), [g])
    assert first.guest_controls[g]["io_tune"][0]["read_iops_sec"] == 200
    again = policies.evaluate(host(), [g])
    assert again.guest_controls == first.guest_controls
    assert g.latest["io_tune"][0].current == IoLimits({"total_iops_sec": 1})
    # Nothing set this time: no io_tune control, whatever was set before.
    assert not PolicySet({"p": "(with Guests g (with g.io_tune t t.name))"}).evaluate(
        host(), [g]).guest_controls


def test_a_trial_with_a_bad_setter_is_refused():
    with pytest.raises(PolicyTrialError):
        PolicySet({"p": "(with Guests g (with g.io_tune t (t.setReadIopsSec \"x\")))"}).try_out(
            host(), [guest("a", [disk()])])


@pytest.mark.parametrize("method", ['(x.GetVar "v")', '(x.SetVar "v" 1)', '(x.Control "c" 1)',
                                    '(x.StatAvg "mem_available")', '(x.Stat "mem_available")',
                                    '(x.GetControl "c")', '(x.GetVar name)'])
@pytest.mark.parametrize("value", ["5", '"text"', "(with Guests g 1)", "nil", "g.io_tune",
                                   "(let ((d (with g.io_tune t t))) d)"])
@pytest.mark.parametrize("trial", [False, True])
def test_an_entity_method_of_anything_else_is_an_error_naming_it(method, value, trial):
    g = guest("a", [disk()])
    text = f'(defvar name "v") (with Guests g (let ((x {value})) {method}))'
    result = evaluate(text, g, trial=trial)
    assert result.ok, result.error
    assert f"x has no method {method[3:].split()[0]}" in result.guest_errors[g].message
    # The same call on the guest itself works.
    assert evaluate(text.replace(f"(x {value})", "(x g)"), g, trial=trial).guest_errors == {}
