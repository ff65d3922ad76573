"""Policy sets, policy parameters, errors and the bounds on evaluation
(docs/policy-language.md, "Policy sets", "Policy parameters", "Errors")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from momservice.policy import Entity, PolicyError, PolicyLimitError, PolicySet

GUEST_STATS = {
    "balloon_cur": 1000, "balloon_max": 2000, "balloon_min": 0,
    "mem_available": 2000, "mem_unused": 500, "major_fault": 0,
    "minor_fault": 0, "swap_in": 0, "swap_out": 0,
}
ROOT = Path(__file__).resolve().parents[2]


def make_host(**stats) -> Entity:
    host = Entity.host()
    host.add_sample({"mem_available": 1000, "mem_free": 250, **stats})
    return host


def make_guest(name: str, **stats) -> Entity:
    guest = Entity.guest({"name": name, "uuid": f"uuid-{name}", "pid": 1})
    guest.add_sample({**GUEST_STATS, **stats})
    return guest


def evaluate(text: str, guests=(), params=None):
    return PolicySet({"p": text}).evaluate(make_host(), list(guests), params)


def error_of(text: str, guests=()) -> PolicyError:
    try:
        policy_set = PolicySet({"p": text})
    except PolicyError as e:
        return e
    result = policy_set.evaluate(make_host(), list(guests))
    assert result.error is not None, f"no error for {text!r}: {result.values}"
    return result.error


# -- order of evaluation -----------------------------------------------------------

def test_policies_run_in_ascending_name_order():
    ps = PolicySet({
        "10-site": '(set trail (+ trail "c"))',
        "00-defines": '(defvar trail "a")',
        "02-balloon": '(set trail (+ trail "b"))',
    })
    assert ps.names == ["00-defines", "02-balloon", "10-site"]
    assert ps.evaluate(make_host(), []).values == ["a", "ab", "abc"]


def test_order_is_plain_string_order():
    ps = PolicySet({"9-late": '(set trail (+ trail "9"))',
                    "10-early": '(defvar trail "10")',
                    "B": '(set trail (+ trail "B"))',
                    "a": '(set trail (+ trail "a"))'})
    assert ps.names == ["10-early", "9-late", "B", "a"]
    assert ps.evaluate(make_host(), []).values[-1] == "109Ba"


def test_later_policy_sees_earlier_definitions():
    ps = PolicySet({"00-defines": "(defvar low_water 0.15) (def twice (x) (* 2 x))",
                    "10-site": "(twice low_water)"})
    assert ps.evaluate(make_host(), []).values[-1] == 0.3


def test_added_policy_takes_its_place_in_order():
    ps = PolicySet({"00-a": '(defvar t "a")', "20-c": '(set t (+ t "c"))'})
    ps.set_policy("10-b", '(set t (+ t "b"))')
    assert ps.names == ["00-a", "10-b", "20-c"]
    assert ps.evaluate(make_host(), []).values[-1] == "abc"


def test_texts_in_order():
    ps = PolicySet({"b": "2", "a": "1"})
    assert ps.texts == {"a": "1", "b": "2"}
    assert list(ps.texts) == ["a", "b"]


def test_empty_set_evaluates_to_nothing():
    result = PolicySet({}).evaluate(make_host(), [make_guest("a")])
    assert result.error is None
    assert result.values == [] and result.host_controls == {} and result.guest_controls == {}


# -- replacing, adding and deleting ----------------------------------------------------

def test_replace_policy_text():
    ps = PolicySet({"p": "1"})
    ps.set_policy("p", "2")
    assert ps.texts == {"p": "2"}
    assert ps.evaluate(make_host(), []).values == [2]


@pytest.mark.parametrize("bad", ["(+ 1 2", "1\n2\n(+ 1 @)", "(defvar x 1)\n\n017",
                                 "1\n)", "(if 1 2)"])
def test_bad_replacement_is_refused_and_previous_set_stays(bad):
    good = {"00-defines": "(defvar x 1)",
            "10-site": '(Host.Control "ksm_run" x) (+ x 1)'}
    ps = PolicySet(good)
    with pytest.raises(PolicyError) as info:
        ps.set_policy("10-site", bad)
    assert isinstance(info.value.line, int)
    assert f"on line {info.value.line}" in str(info.value)
    assert ps.names == ["00-defines", "10-site"]
    assert ps.texts == good
    result = ps.evaluate(make_host(), [])
    assert result.error is None
    assert result.values == [1, 1, 2]
    assert result.host_controls == {"ksm_run": 1}


def test_bad_replacement_reports_the_right_line():
    ps = PolicySet({"p": "1"})
    with pytest.raises(PolicyError) as info:
        ps.set_policy("p", "(defvar a 1)\n(defvar b 2)\n(defvar c 017)\n(defvar d 4)")
    assert info.value.line == 3


def test_bad_new_policy_is_refused_and_not_added():
    ps = PolicySet({"00-a": "1"})
    with pytest.raises(PolicyError) as info:
        ps.set_policy("05-new", "# fine\n(+ 1 $)")
    assert info.value.line == 2
    assert ps.names == ["00-a"]
    assert ps.texts == {"00-a": "1"}
    assert ps.evaluate(make_host(), []).values == [1]


def test_error_names_the_policy():
    ps = PolicySet({"00-a": "1"})
    with pytest.raises(PolicyError) as info:
        ps.set_policy("05-new", "\n\n(")
    assert info.value.policy == "05-new"
    assert "05-new" in str(info.value)


def test_bad_text_in_constructor_is_refused():
    with pytest.raises(PolicyError) as info:
        PolicySet({"00-a": "1", "10-b": "1\n2\n3\n&"})
    assert info.value.line == 4
    assert info.value.policy == "10-b"


def test_line_numbers_are_per_policy():
    ps = PolicySet({"00-a": "1\n2\n3\n4\n5\n", "10-b": "1\nnot_defined_anywhere"})
    result = ps.evaluate(make_host(), [])
    assert result.error.line == 2
    assert result.error.policy == "10-b"
    assert str(result.error) == "policy 10-b: undefined symbol not_defined_anywhere on line 2"


def test_delete_policy():
    ps = PolicySet({"00-a": '(defvar t "a")', "10-b": '(set t (+ t "b"))',
                    "20-c": '(Host.Control "ksm_run" 1)'})
    ps.delete_policy("20-c")
    assert ps.names == ["00-a", "10-b"]
    assert "20-c" not in ps.texts
    result = ps.evaluate(make_host(), [])
    assert result.values == ["a", "ab"]
    assert result.host_controls == {}


def test_delete_then_add_again():
    ps = PolicySet({"a": "1"})
    ps.delete_policy("a")
    assert ps.names == []
    ps.set_policy("a", "2")
    assert ps.evaluate(make_host(), []).values == [2]


# -- policy parameters ---------------------------------------------------------------------

def test_defvar_default_when_parameter_unset():
    result = evaluate("(defvar balloonEnabled 0) balloonEnabled")
    assert result.values == [0, 0]


def test_set_parameter_wins_over_defvar_default():
    result = evaluate("(defvar balloonEnabled 0) balloonEnabled",
                      params={"balloonEnabled": 1})
    assert result.error is None
    assert result.values == [1, 1]


def test_parameter_bound_before_evaluation():
    ps = PolicySet({"00-first": "ksmEnabled", "10-second": "(+ ksmEnabled 1)"})
    assert ps.evaluate(make_host(), [], {"ksmEnabled": 4}).values == [4, 5]


def test_parameter_is_global_and_assignable():
    result = evaluate("(def off () (set ksmEnabled 0)) (off) ksmEnabled",
                      params={"ksmEnabled": 1})
    assert result.values[-1] == 0


def test_parameter_shadowed_by_let_and_restored():
    result = evaluate("(let ((balloonEnabled 5)) balloonEnabled) balloonEnabled",
                      params={"balloonEnabled": 1})
    assert result.values == [5, 1]


def test_parameters_do_not_outlive_the_evaluation():
    ps = PolicySet({"p": "(defvar balloonEnabled 0) balloonEnabled"})
    host = make_host()
    assert ps.evaluate(host, [], {"balloonEnabled": 1}).values == [1, 1]
    assert ps.evaluate(host, [], None).values == [0, 0]
    assert ps.evaluate(host, [], {}).values == [0, 0]


def test_parameter_change_of_value_in_evaluation_does_not_persist():
    ps = PolicySet({"p": "(set balloonEnabled (+ balloonEnabled 1))"})
    params = {"balloonEnabled": 1}
    assert ps.evaluate(make_host(), [], params).values == [2]
    assert ps.evaluate(make_host(), [], params).values == [2]
    assert params == {"balloonEnabled": 1}


def test_unset_parameter_without_default_is_undefined():
    e = error_of("1\n(if balloonEnabled 1 0)")
    assert "undefined symbol balloonEnabled on line 2" in str(e)


# -- errors carry line numbers ---------------------------------------------------------------

ERROR_CASES = [
    ("1\n@", 2),
    ("1\n017", 2),
    ('1\n"unterminated', 2),
    ("1\n(+ 1 2]", 2),
    ("1\n)", 2),
    ("1\n(2 + 2)", 2),
    ("1\nnosuch", 2),
    ("1\n(nosuchfn 1)", 2),
    ("(def f (a) a)\n(f)", 2),
    ("1\n(if 1 2)", 2),
    ("1\n(not 1 2)", 2),
    ("1\n(+ 1)", 2),
    ("1\n(< 1 2 3)", 2),
    ("1\n(and)", 2),
    ("1\n(or)", 2),
    ("1\n(min)", 2),
    ("1\n(max)", 2),
    ("1\n(/ 1 0)", 2),
    ('1\n(+ 1 "a")', 2),
    ("1\n(set nosuch 1)", 2),
    ("1\n(setq nosuch 1)", 2),
    ("1\n(set Host.mem_free 1)", 2),
    ('1\n(Host.Stat "no_such_field")', 2),
    ('1\n(Host.StatAvg "no_such_field")', 2),
    ("1\nHost.no_such_field", 2),
    ('(defvar x 3)\n(x.Control "a" 1)', 2),
    ("(defvar x 3)\n(with x i i)", 2),
    ("1\n(abs nil)", 2),
    ("1\n(<< 1.5 1)", 2),
    ("(def f (x) (+ x nil))\n\n(f 1)", 1),
    # malformed special forms and calls
    ("1\n(let (a 1) a)", 2),
    ("1\n(let ((a)) a)", 2),
    ("1\n(def f x x)", 2),
    ("1\n(def 5 () 1)", 2),
    ("1\n(def f (1) 1)", 2),
    ("1\n(with Guests 5 1)", 2),
    ("1\n(with Guests g)", 2),
    ("1\n(defvar x)", 2),
    ("1\n(set x)", 2),
    ("1\n()", 2),
    ("1\n(+ 1 +)", 2),
    ('1\n(Host.Control "a")', 2),
    ("1\n(Host.Stat 5)", 2),
    ("1\n(Host.Nosuch 1)", 2),
    ("1\n(Host.StatAvg)", 2),
    ("(defvar x 5)\n(x 1)", 2),
]


@pytest.mark.parametrize("text, line", ERROR_CASES)
def test_error_carries_its_line(text, line):
    e = error_of(text)
    assert isinstance(e, PolicyError)
    assert e.line == line, str(e)
    assert str(e).endswith(f"on line {line}") or f"on line {line}" in str(e)


def test_error_in_function_body_reports_body_line_even_from_another_policy():
    ps = PolicySet({"00-defs": "\n\n(def f (x)\n  (/ x 0))", "10-use": "(f 1)"})
    result = ps.evaluate(make_host(), [])
    assert result.error is not None
    assert result.error.line == 4


# -- no controls from a failed evaluation ------------------------------------------------------

def test_failed_evaluation_applies_no_control():
    guests = [make_guest("a"), make_guest("b")]
    result = evaluate("""
        (Host.Control "ksm_run" 1)
        (with Guests g (g.Control "balloon_target" 5))
        (undefined_thing)
        (Host.Control "ksm_pages_to_scan" 10)
    """, guests=guests)
    assert result.error is not None
    assert result.error.line == 4
    assert result.host_controls == {}
    assert result.guest_controls == {}


def test_failed_evaluation_in_a_later_policy_applies_no_control():
    ps = PolicySet({"00-a": '(Host.Control "ksm_run" 1)',
                    "02-b": '(with Guests g (g.Control "balloon_target" 5))',
                    "10-c": "(/ 1 0)"})
    result = ps.evaluate(make_host(), [make_guest("a")])
    assert result.error is not None and result.error.policy == "10-c"
    assert result.host_controls == {}
    assert result.guest_controls == {}


def test_error_outside_guest_item_with_guest_errors_too():
    guests = [make_guest("ok"), make_guest("bad", balloon_cur=0)]
    result = evaluate("""
        (with Guests g (g.Control "balloon_target" (/ 1 g.balloon_cur)))
        (nosuch)
    """, guests=guests)
    assert result.error is not None
    assert result.guest_controls == {}
    assert result.host_controls == {}


def test_evaluate_never_raises_on_runtime_error():
    ps = PolicySet({"p": "(/ 1 0)"})
    result = ps.evaluate(make_host(), [])
    assert isinstance(result.error, PolicyError)


# -- bounds on runaway policies -------------------------------------------------------------

def _timed(text, guests=()):
    ps = PolicySet({"p": text})
    start = time.perf_counter()
    result = ps.evaluate(make_host(), list(guests))
    elapsed = time.perf_counter() - start
    print(f"{text!r}: {elapsed:.3f}s -> {result.error!r}")
    return result


def test_infinite_recursion_ends_in_limit_error():
    result = _timed("(def f (x) (f x))\n(f 1)")
    assert isinstance(result.error, PolicyLimitError)
    assert isinstance(result.error, PolicyError)
    assert isinstance(result.error.line, int)


def test_mutual_recursion_ends_in_limit_error():
    result = _timed("(def ping (x) (pong x)) (def pong (x) (ping x)) (ping 1)")
    assert isinstance(result.error, PolicyLimitError)


def test_recursion_with_growing_arguments_ends_in_policy_error():
    result = _timed("(def f (x) (f (+ x 1))) (f 1)")
    assert isinstance(result.error, PolicyLimitError)


def test_huge_nested_loop_ends_in_limit_error():
    guests = [make_guest("a"), make_guest("b")]
    result = _timed("(defvar l (* (with Guests g 1) 5000))\n"
                    "(with l a (with l b (with l c 1)))", guests=guests)
    assert isinstance(result.error, PolicyLimitError)
    assert result.host_controls == {} and result.guest_controls == {}


def test_long_loop_with_control_requests_ends_in_limit_error():
    guests = [make_guest("a")]
    result = _timed("(defvar l (* (with Guests g 1) 1000))\n"
                    '(with l a (with l b (Host.Control "ksm_run" 1)))', guests=guests)
    assert isinstance(result.error, PolicyLimitError)
    assert result.host_controls == {}


def test_recursion_building_long_lists_ends_in_policy_error():
    result = _timed("(def grow (l) (grow (+ l l))) (grow (with Guests g 1))",
                    guests=[make_guest("a")])
    assert isinstance(result.error, PolicyError)


def test_huge_repetition_ends_in_policy_error():
    result = _timed('(* "ab" 100000000000)')
    assert isinstance(result.error, PolicyError)
    result = _timed("(* (with Guests g 1) 100000000000)", guests=[make_guest("a")])
    assert isinstance(result.error, PolicyError)


def test_huge_shift_ends_in_policy_error():
    result = _timed("(<< 1 100000000000)")
    assert isinstance(result.error, PolicyError)


def test_runaway_recursion_inside_guest_item_is_a_policy_error():
    guests = [make_guest("a"), make_guest("b")]
    result = _timed("(def f (x) (f x)) (with Guests g (f g))", guests=guests)
    errors = ([result.error] if result.error else []) + list(result.guest_errors.values())
    assert errors and all(isinstance(e, PolicyLimitError) for e in errors)
    assert result.guest_controls == {}


def test_deep_nesting_inside_deep_recursion_stays_within_the_bounds():
    # 150 nested forms in a function called 90 deep: inside both bounds
    # (steps and call depth), so the language doc says it evaluates; the
    # compiled engine needs no Python stack per nested form.
    nested = "(+ 1 " * 150 + "(f (- n 1))" + ")" * 150
    result = _timed(f"(def f (n) (if (> n 0) {nested} 0))\n(f 90)")
    assert result.error is None, repr(result.error)
    assert result.values == ["f", 150 * 90]
    # One call deeper than the bound is a limit error with its line.
    result = _timed(f"(def f (n) (if (> n 0) {nested} 0))\n(f 100)")
    assert isinstance(result.error, PolicyLimitError)
    assert result.error.line == 1


def test_python_stack_exhaustion_error_carries_a_line():
    # Every error that comes from the text carries a line number; the other
    # limit errors (depth, steps) do. With the depth bound set far beyond
    # what Python's stack holds, a deep recursion exhausts the stack: the
    # engine turns Python's RecursionError into a PolicyLimitError with
    # the line of the call.
    text = "(def f (n) (if (> n 0) (+ 1 (f (- n 1))) 0))\n(f 100000)"
    result = PolicySet({"p": text}, max_depth=10**6, max_steps=10**9).evaluate(
        make_host(), [])
    assert isinstance(result.error, PolicyLimitError), repr(result.error)
    assert isinstance(result.error.line, int), repr(result.error)
    assert result.error.policy == "p"


def test_depth_limit_in_one_guest_item_spares_the_other_guests():
    # "hitting it is a policy error like any other" + "an error inside one
    # item of with Guests skips that guest's controls ... and the other
    # guests are still processed". The depth bound is per call chain, so
    # the next guest is not affected by the first one's runaway recursion.
    bad, good = make_guest("bad"), make_guest("good")
    result = _timed("""
        (def forever (x) (forever x))
        (with Guests g {
            (g.Control "balloon_target" 1)
            (if (== (g.Prop "name") "bad") (forever 1) 0)
        })
    """, guests=[bad, good])
    assert result.error is None, repr(result.error)
    assert isinstance(result.guest_errors.get(bad), PolicyLimitError)
    assert result.guest_controls == {good: {"balloon_target": 1}}


def test_deepest_allowed_nesting_compiles_or_is_refused_cleanly():
    for depth in (150, 199, 250, 1000):
        text = "(+ 1 " * depth + "1" + ")" * depth
        try:
            ps = PolicySet({"p": text})
        except PolicyError as e:
            assert isinstance(e.line, int)
            continue
        result = ps.evaluate(make_host(), [])
        assert result.error is None or isinstance(result.error, PolicyError)
        if result.error is None:
            assert result.values == [depth + 1]


# Some runaways are not caught by the step and depth bounds and would hang
# or exhaust memory; they run in a child process with a safety net (time
# and address-space limits) so a failure cannot take the test run down.
# The child reports its peak memory: a bounded evaluation needs little.

_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    limit = 2 * 1024 ** 3
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from momservice.policy import Entity, PolicyError, PolicySet
    stats = json.loads(sys.argv[2])
    host = Entity.host(); host.add_sample({"mem_available": 1000, "mem_free": 250})
    guest = Entity.guest({"name": "a"}); guest.add_sample(stats)
    start = time.perf_counter()
    try:
        result = PolicySet({"p": sys.argv[1]}).evaluate(host, [guest])
        error = result.error
    except BaseException as e:  # report, do not crash
        error = e
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    print(json.dumps({"error_type": type(error).__name__ if error else None,
                      "is_policy_error": isinstance(error, PolicyError),
                      "error": str(error), "elapsed": elapsed, "peak_kib": peak}))
""")

#: A hang detector, not a performance bound: a bounded evaluation of these
#: texts ends in well under a second.
_HANG_SECONDS = 20
_PEAK_KIB = 512 * 1024


def _run_isolated(text: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD, text, json.dumps(GUEST_STATS)],
                              capture_output=True, text=True, timeout=_HANG_SECONDS,
                              env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        print(f"{text!r}: still running after {time.perf_counter() - start:.1f}s")
        pytest.fail(f"evaluation of {text!r} did not end (killed after {_HANG_SECONDS}s)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{text!r}: {report}")
    return report


def _assert_bounded(report: dict) -> None:
    assert report["is_policy_error"], report
    assert report["peak_kib"] < _PEAK_KIB, report


def test_isolated_runner_sees_a_plain_limit_error():
    # The harness itself: a runaway the bounds do catch.
    report = _run_isolated("(def f (x) (f x)) (f 1)")
    _assert_bounded(report)
    assert report["error_type"] == "PolicyLimitError"


def test_repeated_squaring_is_bounded():
    _assert_bounded(_run_isolated(
        "(def sq (x n) (if (> n 0) (sq (* x x) (- n 1)) x)) (> (sq 3 40) 0)"))


def test_growing_shift_loop_is_bounded():
    _assert_bounded(_run_isolated(
        "(defvar l (* (with Guests g 1) 200000)) (defvar x 1) "
        "(with l a (set x (<< x 4000)))"))


def test_loop_of_large_strings_is_bounded():
    _assert_bounded(_run_isolated(
        '(defvar s (* "a" 999999)) (defvar l (* (with Guests g 1) 400000)) '
        '(with l a (+ s "b"))'))


# -- Python's own exceptions never leave an evaluation ----------------------------------------

# A hex literal of 4000 digits is an integer of 16000 bits, 4817 decimal
# digits: more than Python converts to text by default
# (sys.get_int_max_str_digits() is 4300), so an error message or a debug
# line that quotes it with repr() would raise ValueError.
BIG = "0x" + "f" * 4000
BIG_VALUE = int("f" * 4000, 16)


def _load_and_evaluate(text):
    """None when the text is refused at load (cleanly, with a line), else the
    result of evaluating it, which must not raise."""
    try:
        policy_set = PolicySet({"p": text})
    except PolicyError as e:
        assert isinstance(e.line, int)
        return None
    except Exception as e:  # noqa: BLE001 - the point of the test
        pytest.fail(f"loading raised {type(e).__name__}: {str(e)[:200]}")
    try:
        return policy_set.evaluate(make_host(), [make_guest("a")])
    except Exception as e:  # noqa: BLE001 - the point of the test
        pytest.fail(f"evaluate() raised {type(e).__name__}: {str(e)[:200]}")


@pytest.mark.parametrize("literal", ["1" * 5000, "-" + "9" * 5000, BIG, "0o" + "7" * 6000],
                         ids=["decimal", "negative-decimal", "hex", "octal"])
def test_huge_integer_literal_is_refused_or_accepted_cleanly(literal):
    result = _load_and_evaluate(literal)
    if result is not None:
        assert result.error is None or isinstance(result.error, PolicyError)


@pytest.mark.parametrize("bad", ['(+ big "a")', "(< big nil)", '(min big "a")',
                                 "(with big x 1)", "big.field", "(+ big big)"])
def test_error_about_a_huge_integer_is_a_policy_error(bad):
    result = _load_and_evaluate(f"(defvar big {BIG})\n{bad}")
    if result is not None:
        assert isinstance(result.error, PolicyError)
        assert result.error.line == 2


def test_error_about_a_huge_integer_inside_a_guest_item():
    result = _load_and_evaluate(f'(defvar big {BIG})\n(with Guests g (+ big "a"))')
    if result is not None:
        assert result.error is None
        assert len(result.guest_errors) == 1


def test_debug_of_a_huge_integer():
    result = _load_and_evaluate(f"(debug {BIG})")
    if result is not None:
        assert result.error is None
        assert result.values == [BIG_VALUE]
        assert result.messages
