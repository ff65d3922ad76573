"""Host and guests as a policy sees them (docs/policy-language.md, "Entities")."""

from __future__ import annotations

import pytest

from momservice.policy import Entity, PolicyError, PolicySet

GUEST_STATS = {
    "balloon_cur": 1000, "balloon_max": 2000, "balloon_min": 0,
    "mem_available": 2000, "mem_unused": 500, "major_fault": 0,
    "minor_fault": 0, "swap_in": 0, "swap_out": 0,
}


def make_host(**stats) -> Entity:
    host = Entity.host()
    host.add_sample({"mem_available": 1000, "mem_free": 250, **stats})
    return host


def make_guest(name: str, history_length: int = 10, **stats) -> Entity:
    guest = Entity.guest({"name": name, "uuid": f"uuid-{name}", "pid": 4321},
                         history_length=history_length)
    guest.add_sample({**GUEST_STATS, **stats})
    return guest


def evaluate(text: str, guests=(), host=None, params=None):
    return PolicySet({"p": text}).evaluate(host or make_host(), list(guests), params)


def value(text: str, **kw):
    result = evaluate(text, **kw)
    assert result.error is None, str(result.error)
    assert not result.guest_errors, result.guest_errors
    return result.values[-1]


def error_of(text: str, **kw) -> PolicyError:
    result = evaluate(text, **kw)
    assert result.error is not None, result.values
    return result.error


# -- FIELD and Stat ------------------------------------------------------------

def test_dotted_field_is_newest_value():
    guest = make_guest("vm1", balloon_cur=100)
    guest.add_sample({**GUEST_STATS, "balloon_cur": 200})
    guest.add_sample({**GUEST_STATS, "balloon_cur": 300})
    assert value("(with Guests g g.balloon_cur)", guests=[guest]) == [300]


def test_stat_call_is_the_same_as_the_field():
    guest = make_guest("vm1", balloon_cur=100)
    guest.add_sample({**GUEST_STATS, "balloon_cur": 250})
    assert value('(with Guests g (== (g.Stat "balloon_cur") g.balloon_cur))',
                 guests=[guest]) == [True]
    assert value('(with Guests g (g.Stat "balloon_cur"))', guests=[guest]) == [250]


def test_host_fields():
    host = make_host(mem_free=123)
    assert value('(+ Host.mem_free (Host.Stat "mem_available"))', host=host) == 1123


def test_absent_optional_guest_field_reads_nil():
    guest = make_guest("vm1")  # no rss, swap_usage, ...
    assert value("(with Guests g g.rss)", guests=[guest]) == [None]
    assert value('(with Guests g (g.Stat "swap_usage"))', guests=[guest]) == [None]


def test_absent_optional_field_works_with_valid_guard():
    guest = make_guest("vm1")
    assert value("(with Guests g (and (valid g.rss) (> g.rss 0)))", guests=[guest]) == [False]


def test_absent_host_field_reads_nil():
    assert value("Host.swap_usage") is None
    assert value('(Host.Stat "ksm_run")') is None


def test_field_absent_from_newest_sample_reads_nil():
    # The newest value, not the newest non-nil one.
    host = Entity.host()
    host.add_sample({"mem_free": 5, "swap_usage": 7})
    host.add_sample({"mem_free": 6})
    assert value("Host.swap_usage", host=host) is None
    assert value('(Host.Stat "swap_usage")', host=host) is None


def test_optional_field_present_reads_value():
    guest = make_guest("vm1", rss=4096)
    assert value("(with Guests g g.rss)", guests=[guest]) == [4096]


@pytest.mark.parametrize("call", ['(Host.Stat "no_such_field")',
                                  '(Host.StatAvg "no_such_field")'])
def test_stat_of_unprovided_field_is_an_error_naming_it(call):
    e = error_of(f"1\n{call}")
    assert "no_such_field" in str(e)
    assert e.line == 2


@pytest.mark.parametrize("call", ['(g.Stat "bogus_stat")', '(g.StatAvg "bogus_stat")'])
def test_guest_stat_of_unprovided_field_is_an_error_naming_it(call):
    guest = make_guest("vm1")
    result = evaluate(f"1\n(with Guests g {call})", guests=[guest])
    errors = [result.error] if result.error else list(result.guest_errors.values())
    assert len(errors) == 1
    assert "bogus_stat" in str(errors[0])
    assert errors[0].line == 2


# -- StatAvg -----------------------------------------------------------------------

def test_stat_avg_is_mean_over_history():
    host = Entity.host()
    for free in (100, 200, 600):
        host.add_sample({"mem_free": free, "mem_available": 1000})
    assert value('(Host.StatAvg "mem_free")', host=host) == 300


def test_stat_avg_is_float():
    host = Entity.host()
    host.add_sample({"mem_free": 1})
    host.add_sample({"mem_free": 2})
    assert value('(Host.StatAvg "mem_free")', host=host) == 1.5


def test_stat_avg_ignores_nil_samples():
    host = Entity.host()
    host.add_sample({"mem_free": 100})
    host.add_sample({"mem_free": None})
    host.add_sample({})  # absent: nil as well
    host.add_sample({"mem_free": 300})
    assert value('(Host.StatAvg "mem_free")', host=host) == 200


def test_stat_avg_all_nil_is_zero_float():
    host = Entity.host()
    host.add_sample({"swap_usage": None})
    host.add_sample({})
    result = value('(Host.StatAvg "swap_usage")', host=host)
    assert result == 0.0 and type(result) is float


def test_stat_avg_bounded_by_history_length():
    host = Entity.host(history_length=3)
    for free in (1000, 1000, 10, 20, 30):
        host.add_sample({"mem_free": free})
    assert value('(Host.StatAvg "mem_free")', host=host) == 20


def test_stat_avg_of_guest_with_history_length():
    guest = make_guest("vm1", history_length=2, balloon_cur=100)
    guest.add_sample({**GUEST_STATS, "balloon_cur": 200})
    guest.add_sample({**GUEST_STATS, "balloon_cur": 400})
    assert value('(with Guests g (g.StatAvg "balloon_cur"))', guests=[guest]) == [300]


def test_stat_avg_follows_new_samples():
    host = Entity.host()
    host.add_sample({"mem_free": 10})
    ps = PolicySet({"p": '(Host.StatAvg "mem_free")'})
    assert ps.evaluate(host, []).values == [10]
    host.add_sample({"mem_free": 30})
    assert ps.evaluate(host, []).values == [20]


def test_generic_entity_history_length():
    entity = Entity("host", {}, required=(), optional=("x",), history_length=2)
    for x in (1, 2, 3):
        entity.add_sample({"x": x})
    assert value('(Host.StatAvg "x")', host=entity) == 2.5
    assert value("Host.x", host=entity) == 3


# -- Prop ----------------------------------------------------------------------------

@pytest.mark.parametrize("prop, expected", [("name", "vm7"), ("uuid", "uuid-vm7"),
                                            ("pid", 4321)])
def test_prop(prop, expected):
    guest = make_guest("vm7")
    assert value(f'(with Guests g (g.Prop "{prop}"))', guests=[guest]) == [expected]


def test_prop_is_fixed_and_not_a_statistic():
    guest = make_guest("vm7", balloon_cur=5)
    assert value('(with Guests g (g.Prop "name"))', guests=[guest]) == ["vm7"]
    guest.add_sample({**GUEST_STATS, "balloon_cur": 6})
    assert value('(with Guests g (g.Prop "name"))', guests=[guest]) == ["vm7"]


# -- Control / GetControl ----------------------------------------------------------------

def test_control_request_reaches_the_result():
    guest = make_guest("vm1")
    result = evaluate('(with Guests g (g.Control "balloon_target" 1234))', guests=[guest])
    assert result.guest_controls == {guest: {"balloon_target": 1234}}


def test_host_control_reaches_the_result():
    result = evaluate('(Host.Control "ksm_run" 1) (Host.Control "ksm_pages_to_scan" 100)')
    assert result.host_controls == {"ksm_run": 1, "ksm_pages_to_scan": 100}
    assert result.guest_controls == {}


def test_last_control_request_wins():
    guest = make_guest("vm1")
    result = evaluate('(with Guests g (g.Control "balloon_target" 1)) '
                      '(with Guests g (g.Control "balloon_target" 2))', guests=[guest])
    assert result.guest_controls == {guest: {"balloon_target": 2}}


def test_get_control_sees_request_so_far():
    guest = make_guest("vm1")
    result = evaluate("""
        (with Guests g (g.GetControl "balloon_target"))
        (with Guests g (g.Control "balloon_target" 77))
        (with Guests g (g.GetControl "balloon_target"))
        (with Guests g (g.Control "balloon_target" (+ (g.GetControl "balloon_target") 1)))
    """, guests=[guest])
    assert result.error is None
    assert result.values == [[None], [77], [77], [78]]
    assert result.guest_controls == {guest: {"balloon_target": 78}}


def test_controls_are_per_guest():
    a, b = make_guest("a", balloon_cur=10), make_guest("b", balloon_cur=20)
    result = evaluate('(with Guests g (g.Control "balloon_target" g.balloon_cur))',
                      guests=[a, b])
    assert result.guest_controls == {a: {"balloon_target": 10}, b: {"balloon_target": 20}}


def test_get_control_does_not_carry_over_evaluations():
    guest = make_guest("vm1")
    ps = PolicySet({"p": '(with Guests g (g.GetControl "balloon_target")) '
                         '(with Guests g (g.Control "balloon_target" 5))'})
    assert ps.evaluate(make_host(), [guest]).values[0] == [None]
    assert ps.evaluate(make_host(), [guest]).values[0] == [None]


# -- SetVar / GetVar -------------------------------------------------------------------------

def test_set_var_persists_across_evaluations():
    host = make_host()
    PolicySet({"p": '(Host.SetVar "mark" 41)'}).evaluate(host, [])
    assert host.variables["mark"] == 41
    result = PolicySet({"p": '(+ 1 (Host.GetVar "mark"))'}).evaluate(host, [])
    assert result.values == [42]


def test_set_var_counter_on_guest():
    guest = make_guest("vm1")
    ps = PolicySet({"p": """
        (with Guests g
            (g.SetVar "rounds"
                (if (valid (g.GetVar "rounds")) (+ (g.GetVar "rounds") 1) 1)))
    """})
    host = make_host()
    for _ in range(3):
        result = ps.evaluate(host, [guest])
        assert result.error is None and not result.guest_errors
    assert result.values == [[3]]
    assert guest.variables["rounds"] == 3


def test_set_var_yields_value_readable_in_same_evaluation():
    host = make_host()
    result = evaluate('(Host.SetVar "x" 9) (Host.GetVar "x")', host=host)
    assert result.values[-1] == 9


def test_set_var_is_per_entity():
    a, b = make_guest("a"), make_guest("b")
    evaluate('(with Guests g (g.SetVar "who" (g.Prop "name")))', guests=[a, b])
    assert a.variables["who"] == "a"
    assert b.variables["who"] == "b"


def test_preset_entity_variable_is_readable():
    host = make_host()
    host.variables["seed"] = 5
    assert value('(Host.GetVar "seed")', host=host) == 5


# -- Guests membership ------------------------------------------------------------------------

@pytest.mark.parametrize("missing", sorted(GUEST_STATS))
def test_guest_missing_a_required_field_is_left_out(missing):
    complete = make_guest("complete")
    partial = Entity.guest({"name": "partial"})
    partial.add_sample({k: v for k, v in GUEST_STATS.items() if k != missing})
    result = evaluate('(with Guests g (g.Prop "name"))', guests=[complete, partial])
    assert result.values == [["complete"]]


def test_guest_with_nil_required_field_is_left_out():
    partial = Entity.guest({"name": "partial"})
    partial.add_sample({**GUEST_STATS, "balloon_cur": None})
    result = evaluate('(with Guests g (g.Control "balloon_target" 1))', guests=[partial])
    assert result.values == [[]]
    assert result.guest_controls == {}


def test_guest_without_any_sample_is_left_out():
    fresh = Entity.guest({"name": "fresh"})
    assert value('(with Guests g (g.Prop "name"))', guests=[fresh]) == []


def test_guest_missing_only_optional_fields_is_included():
    guest = make_guest("vm1")
    assert value('(with Guests g (g.Prop "name"))', guests=[guest]) == ["vm1"]


def test_guest_left_out_only_for_that_round():
    guest = Entity.guest({"name": "late"})
    ps = PolicySet({"p": '(with Guests g (g.Prop "name"))'})
    guest.add_sample({k: v for k, v in GUEST_STATS.items() if k != "swap_in"})
    assert ps.evaluate(make_host(), [guest]).values == [[]]
    guest.add_sample(GUEST_STATS)
    assert ps.evaluate(make_host(), [guest]).values == [["late"]]


def test_guests_keep_their_order():
    guests = [make_guest(n) for n in ("c", "a", "b")]
    assert value('(with Guests g (g.Prop "name"))', guests=guests) == ["c", "a", "b"]


# -- method errors carry lines -----------------------------------------------------------------

def test_method_on_non_entity_is_an_error_with_line():
    e = error_of('(defvar x 5)\n(x.Control "a" 1)')
    assert e.line == 2


def test_attribute_of_non_entity_is_an_error_with_line():
    e = error_of("(defvar x 5)\nx.foo")
    assert e.line == 2


def test_unknown_dotted_field_is_an_error_with_line():
    e = error_of("1\nHost.no_such_field")
    assert e.line == 2
    assert "no_such_field" in str(e)
