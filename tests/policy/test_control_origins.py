"""Where each control's value came from (EvaluationResult.control_origins),
and which statistics a set reads (PolicySet.reads)."""

from __future__ import annotations

from momservice.fields import GUEST_REQUIRED_FIELDS
from momservice.policy import Entity, PolicySet


def entities(count: int = 2):
    host = Entity.host()
    host.add_sample({"mem_free": 1000, "mem_available": 4000})
    guests = []
    for n in range(count):
        guest = Entity.guest({"name": f"g{n}", "uuid": f"u{n}"})
        guest.add_sample({**{f: 1 for f in GUEST_REQUIRED_FIELDS}, "balloon_cur": 100 * (n + 1)})
        guests.append(guest)
    return host, guests


def origins(policies: dict[str, str]):
    host, guests = entities()
    result = PolicySet(policies).evaluate(host, guests)
    assert result.error is None, result.error
    return host, guests, result


def test_the_last_control_call_wins_and_is_named():
    host, (g0, g1), result = origins({
        "10-first": '(with Guests g (g.Control "balloon_target" 1))\n',
        "20-second": '\n\n(with Guests g\n  (if (> g.balloon_cur 150)\n'
                     '      (g.Control "balloon_target" 2)\n      nil))\n'})
    assert result.guest_controls[g0] == {"balloon_target": 1}
    assert result.guest_controls[g1] == {"balloon_target": 2}
    assert result.control_origins["balloon_target"][g0] == ("10-first", 1)
    assert result.control_origins["balloon_target"][g1] == ("20-second", 5)


def test_a_control_set_in_a_function_is_named_where_the_call_is_written():
    # "shrink" is small and called in a with body: written out in place
    # (inlined); "far" is called from another policy, a real Python call.
    host, (g0, g1), result = origins({
        "00-lib": '(def far (g v)\n  (g.Control "balloon_target" v))\n',
        "10-use": '(def shrink (g) (g.Control "balloon_target" (- g.balloon_cur 10)))\n'
                  '(with Guests g\n  (if (== (g.Prop "name") "g0") (shrink g) (far g 7)))\n'
                  '(Host.Control "ksm_run" 1)\n'})
    assert result.guest_controls == {g0: {"balloon_target": 90}, g1: {"balloon_target": 7}}
    assert result.control_origins["balloon_target"][g0] == ("10-use", 1)
    assert result.control_origins["balloon_target"][g1] == ("00-lib", 2)
    assert result.control_origins["ksm_run"][host] == ("10-use", 4)


def test_a_control_named_at_run_time_is_named_too():
    host, (g0, _), result = origins({
        "p": '(defvar which "balloon_target")\n(with Guests g\n  (g.Control which 5))\n'})
    assert result.guest_controls[g0] == {"balloon_target": 5}
    assert result.control_origins["balloon_target"][g0] == ("p", 3)


def test_the_statistics_a_set_reads():
    reads = PolicySet({
        "a": '(def used (x) (- x.balloon_cur x.mem_unused))\n'
             '(with Guests guest (guest.Control "balloon_target" (+ (used guest) '
             '(+ (guest.StatAvg "swap_in") Host.mem_free))))\n',
        "b": '(if (< (Host.StatAvg "mem_free") (Host.Stat "mem_available")) 1 0)\n'}).reads
    assert reads.guest == ("balloon_cur", "mem_unused")
    assert reads.guest_means == ("swap_in",)
    assert reads.host == ("mem_available", "mem_free")
    assert reads.host_means == ("mem_free",)
    assert PolicySet({}).reads.guest == ()
