"""Dynamic scoping where the compiled engine keeps variables in Python locals.

The engine writes each policy as Python source and keeps a variable in a
local only when no function of the set can see it (codegen's doc).  Each
case here is one where that decision could go wrong; every expectation
follows from policy-language.md ("Scopes"), not from an earlier run.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from momservice.policy import Entity, PolicyError, PolicySet

GUEST_STATS = {
    "balloon_cur": 1000, "balloon_max": 2000, "balloon_min": 0,
    "mem_available": 2000, "mem_unused": 500, "major_fault": 0,
    "minor_fault": 0, "swap_in": 0, "swap_out": 0,
}


def make_host() -> Entity:
    host = Entity.host()
    host.add_sample({"mem_available": 1000, "mem_free": 250})
    return host


def make_guest(name: str) -> Entity:
    guest = Entity.guest({"name": name, "uuid": f"uuid-{name}", "pid": 1})
    guest.add_sample(GUEST_STATS)
    return guest


def last_value(policies: dict[str, str] | str, guests=()):
    if isinstance(policies, str):
        policies = {"p": policies}
    result = PolicySet(policies).evaluate(make_host(), list(guests))
    assert result.error is None, str(result.error)
    return result.values[-1]


def test_helper_of_another_policy_reads_the_callers_let_variable():
    assert last_value({"10-helper": "(def h () x)",
                       "20-main": "(let ((x 5)) (h))"}) == 5


def test_a_policy_replaced_later_can_read_a_let_variable_of_another():
    policies = PolicySet({"10-helper": "(def h () 0)", "20-main": "(let ((x 5)) (h))"})
    assert policies.evaluate(make_host(), []).values[-1] == 0
    policies.set_policy("10-helper", "(def h () x)")
    assert policies.evaluate(make_host(), []).values[-1] == 5
    policies.set_policy("10-helper", "(def h () 0)")
    assert policies.evaluate(make_host(), []).values[-1] == 0


def test_conditional_defvar_in_a_function_falls_back_to_the_caller():
    text = "(def f (c) { (if c (defvar y 1) 0) y })\n"
    assert last_value(text + "(let ((y 2)) (f 0))") == 2
    assert last_value(text + "(let ((y 2)) (f 1))") == 1


def test_callee_sets_the_callers_variable():
    assert last_value("(def bump () (set n (+ n 1)))\n"
                      "(let ((n 1)) (bump) (bump) n)") == 3


def test_parameter_is_seen_by_the_functions_it_calls():
    assert last_value("(def g () a) (def f (a) (g)) (f 7)") == 7


def test_second_defvar_in_the_same_scope_changes_nothing():
    assert last_value("(let () (defvar a 1) (defvar a 2) a)") == 1
    assert last_value("(def f () { (defvar a 1) (defvar a 2) a }) (f)") == 1


def test_defvar_of_a_let_variable_keeps_the_let_value():
    assert last_value("(let ((a 1)) (defvar a 2))") == 1


def test_operands_are_evaluated_left_to_right_before_a_later_set():
    assert last_value("(let ((x 1)) (+ x (set x 5)))") == 6
    assert last_value("(def f (x) (+ x (set x 5))) (f 1)") == 6


def test_each_item_of_with_starts_a_fresh_scope():
    guests = [make_guest("a"), make_guest("b")]
    assert last_value("(with Guests g { (defvar seen 0) (set seen (+ seen 1)) seen })",
                      guests) == [1, 1]


def test_helper_reads_the_item_of_with_from_its_caller():
    guests = [make_guest("a"), make_guest("b")]
    assert last_value('(def name () (g.Prop "name")) (with Guests g (name))',
                      guests) == ["a", "b"]


def test_let_binding_shadows_a_builtin_for_calls():
    result = PolicySet({"p": "(let ((max 3)) (max 1 2))"}).evaluate(make_host(), [])
    assert isinstance(result.error, PolicyError)
    assert "max is not a function" in str(result.error)


def test_let_bindings_see_the_earlier_ones_and_a_later_one_replaces():
    assert last_value("(let ((a 1) (b (+ a 1)) (a 10)) (+ a b))") == 12


def test_a_let_variable_set_inside_a_nested_function_call_argument():
    assert last_value("(def id (v) v) (let ((x 1)) (id (set x 4)) x)") == 4


@pytest.mark.parametrize("depth", [30, 60, 120])
def test_deeply_nested_lets_keep_their_bindings(depth):
    # Deeper than Python lets one function nest blocks: the generated code
    # moves the inner part into closures, which must still see and set
    # the outer variables.
    text = "".join(f"(let ((v{i} {i})) " for i in range(depth))
    text += "{ (set v0 100) (+ v0 v%d) }" % (depth - 1) + ")" * depth
    assert last_value(text) == 100 + depth - 1
    assert last_value(f"(def f () {text}) (f)") == 100 + depth - 1
    # The same with every variable seen by a helper (so kept on the scope
    # stack, each let in a try block) and set by it.
    names = " ".join(f"v{i}" for i in range(depth))
    helper = "(def peek () { (set v0 100) (+ v0 v%d) })\n(def all () (list %s))\n" % (
        depth - 1, names)
    text = "".join(f"(let ((v{i} {i})) " for i in range(depth)) + "(peek)" + ")" * depth
    assert last_value(helper + text) == 100 + depth - 1


@pytest.mark.parametrize("depth", [30, 60, 150])
def test_deeply_nested_ifs_choose_the_right_branch(depth):
    text = "".join(f"(if (> n {i}) " for i in range(depth)) + "n" + " -1)" * depth
    assert last_value(f"(def f (n) {text}) (f {depth + 5})") == depth + 5
    assert last_value(f"(def f (n) {text}) (f {depth // 2})") == -1


def test_deeply_nested_withs_visit_every_combination():
    guests = [make_guest("a"), make_guest("b")]
    depth = 14   # 2**14 items: more loops than Python nests in one function
    text = ("(defvar n 0)\n" + "".join(f"(with Guests g{i} " for i in range(depth))
            + "(set n (+ n 1))" + ")" * depth + "\nn")
    assert last_value(text, guests) == 2 ** depth


def test_a_guest_error_deep_inside_nested_code_spares_the_other_guest():
    guests = [make_guest("bad"), make_guest("good")]
    inner = '{ (g.Control "balloon_target" 1) (if (== (g.Prop "name") "bad") nosuch 0) }'
    text = "(with Guests g " + "(let ((x 1)) " * 40 + inner + ")" * 40 + ")"
    result = PolicySet({"p": text}).evaluate(make_host(), guests)
    assert result.error is None, str(result.error)
    assert set(result.guest_errors) == {guests[0]}
    assert "undefined symbol nosuch" in str(result.guest_errors[guests[0]])
    assert result.guest_controls == {guests[1]: {"balloon_target": 1}}


# -- calls written out in place (small defs called inside with) --------------

def test_an_inlined_call_follows_the_name_when_it_is_rebound():
    guests = [make_guest("a"), make_guest("b")]
    assert last_value("(def f (g) 1) (def h (g) 2) (let ((f h)) (with Guests g (f g)))",
                      guests) == [2, 2]
    result = PolicySet({"p": "(def f (g) 1) (let ((f 5)) (with Guests g (f g)))"}).evaluate(
        make_host(), guests)
    assert result.error is None
    assert all("f is not a function" in str(e) for e in result.guest_errors.values())
    assert set(result.guest_errors) == set(guests)


def test_an_inlined_call_keeps_its_own_scope_and_the_callers_dynamic_ones():
    guests = [make_guest("a")]
    # The body cannot see the caller's let variable unless it is dynamic
    # (read by a function), and its parameter shadows the caller's.
    text = """
        (def f (g) (+ (g.Prop "pid") k))
        (let ((k 10)) (with Guests g (f g)))
    """
    assert last_value(text, guests) == [11]
    text = """
        (defvar x 1)
        (def f (g) (set x (+ x 1)))
        (with Guests g { (f g) (f g) x })
    """
    assert last_value(text, guests) == [3]


def test_an_inlined_call_counts_toward_the_depth_bound_and_names_its_policy():
    guests = [make_guest("a")]
    text = "(def f (g) nosuch)\n(with Guests g (f g))"
    result = PolicySet({"p": text}).evaluate(make_host(), guests)
    error = result.guest_errors[guests[0]]
    assert (error.message, error.line, error.policy) == ("undefined symbol nosuch", 1, "p")
    text = "(def h (g) 1) (def f (g) (h g)) (with Guests g (f g))"
    result = PolicySet({"p": text}, max_depth=0).evaluate(make_host(), guests)
    assert "calls nested deeper than 0 in function f" in str(result.guest_errors[guests[0]])
    # A leaf (a function calling none) cannot nest further: it is not counted.
    result = PolicySet({"p": text}, max_depth=1).evaluate(make_host(), guests)
    assert result.ok and not result.guest_errors


@pytest.mark.parametrize("inlined", [False, True])
def test_recursion_stops_at_the_depth_bound_leaves_one_call_beyond(inlined):
    # f recurses n deep and ends in the leaf g; each f counts, g does not.
    chain = "(def g (n) n) (def f (n) (if (> n 0) (f (- n 1)) (g n)))"
    call = "(with Guests x (f N))" if inlined else "(f N)"
    for n, ok in ((9, True), (10, False)):
        result = PolicySet({"p": chain + call.replace("N", str(n))},
                           max_depth=10).evaluate(make_host(), [make_guest("a")])
        failed = result.error or next(iter(result.guest_errors.values()), None)
        assert (failed is None) == ok, (n, failed)
        if not ok:
            assert "calls nested deeper than 10 in function f" in str(failed)


# -- built-ins written out in place --------------------------------------------

_operand = st.one_of(st.integers(-3, 3), st.sampled_from([1.0, -0.0, 0.0, 2.5]),
                     st.sampled_from(['"a"', '"b"']))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["max", "min"]), st.lists(_operand, min_size=1, max_size=4))
def test_written_out_max_and_min_agree_with_python(name, operands):
    # Ties keep the first operand (max 1 1.0 is the integer 1), strings
    # compare with strings only: as the language doc's "Python semantics".
    values = [o.strip('"') if isinstance(o, str) else o for o in operands]
    text = f"({name} {' '.join(str(o) for o in operands)})"
    result = PolicySet({"p": text}).evaluate(make_host(), [])
    try:
        expected = (max if name == "max" else min)(values)
    except TypeError:
        assert isinstance(result.error, PolicyError)
        assert f"{name} cannot compare" in result.error.message
        return
    assert result.error is None, str(result.error)
    (got,) = result.values
    assert got == expected and type(got) is type(expected)
    assert str(got) == str(expected)   # -0.0 stays -0.0


# The built-ins max, min, abs, not and valid are written in place unless a
# binding form of the set names them: a rebinding in another policy of the
# set, or in a function called from elsewhere, must still be seen.

def test_a_builtin_rebound_by_a_later_policy_is_seen_by_an_earlier_one():
    policies = PolicySet({"10-a": "(def biggest (a b) (max a b))",
                          "20-b": "(let ((max (def pick (a b) a))) 0) (biggest 1 2)"})
    assert policies.evaluate(make_host(), []).values[-1] == 2
    policies = PolicySet({"10-a": "(def biggest (a b) (max a b))",
                          "20-b": "(def max (a b) (- a b)) (biggest 10 2)"})
    assert policies.evaluate(make_host(), []).values[-1] == 8


def test_a_builtin_bound_by_a_caller_is_seen_by_the_function_it_calls():
    policies = PolicySet({"10-a": "(def check (x) (valid x))",
                          "20-b": "(def valid (x) 42) (let ((v 1)) (check v))"})
    assert policies.evaluate(make_host(), []).values[-1] == 42
    text = "(def f (x) (abs x)) (let ((abs 5)) (f -3))"
    result = PolicySet({"p": text}).evaluate(make_host(), [])
    assert "abs is not a function" in str(result.error)


def test_removing_the_policy_that_rebinds_a_builtin_restores_it():
    policies = PolicySet({"10-a": "(def biggest (a b) (max a b))",
                          "20-b": "(def max (a b) a)", "30-c": "(biggest 1 2)"})
    assert policies.evaluate(make_host(), []).values[-1] == 1
    policies.delete_policy("20-b")
    assert policies.evaluate(make_host(), []).values[-1] == 2
    policies.set_policy("20-b", "(set valid 3)")
    policies.set_policy("30-c", "(valid 1)")
    assert "valid is not a function" in str(policies.evaluate(make_host(), []).error)


def test_a_parameter_named_like_a_builtin_is_refused():
    result = PolicySet({"p": "(max 1 2)"}).evaluate(make_host(), [], {"max": 7})
    assert "may not be named like a built-in function: max" in str(result.error)


# A def made once at the top level, whose name nothing else binds, is called
# without a lookup from the next top-level expression on; everything the
# language says about the name must still hold.

def _values(policies: dict[str, str], **params) -> list:
    result = PolicySet(policies).evaluate(make_host(), [make_guest("a")], params)
    assert result.error is None, result.error
    return result.values


def _error(policies: dict[str, str]) -> str:
    result = PolicySet(policies).evaluate(make_host(), [make_guest("a")])
    return str(result.error or next(iter(result.guest_errors.values())))


def test_a_call_before_the_def_is_still_an_undefined_function():
    assert "undefined function f" in _error({"p": "(f 1) (def f (x) x)"})
    assert "undefined function f" in _error({"p": "(def g () (f 1)) (g) (def f (x) x)"})
    assert _values({"p": "(def g () (f 1)) (def f (x) (+ x 1)) (g)"})[-1] == 2


def test_another_binding_of_the_name_anywhere_in_the_set_is_seen():
    base = "(def f (x) (+ x 1)) "
    assert _values({"p": base + "(let ((f 5)) f)"})[-1] == 5
    assert "f is not a function" in _error({"p": base + "(let ((f 5)) (f 1))"})
    assert "f is not a function" in _error({"p": base + "(set f 3) (f 1)"})
    assert _values({"10-a": base + "(def g () (f 1))", "20-b": "(def f (x) 7) (g)"})[-1] == 7
    # A parameter named f in another policy: k, called from h, sees it.
    assert _values({"10-a": base + "(def k () (f 1))",
                    "20-b": "(def h (f) (k)) (def q (x) 42) (h q) (k)"})[-2:] == [42, 2]
    # A def of the same name elsewhere in the policy (a nested one) replaces it.
    text = base + "(def swap () (def f (x) (* x 10))) (f 1) (swap) (f 1)"
    assert _values({"p": text})[-3:] == [2, "f", 10]


def test_a_parameter_of_the_same_name_gives_way_to_the_def():
    assert _values({"p": "(def f (x) (+ x 1)) (f 1)"}, f=5)[-1] == 2


def test_a_direct_call_with_the_wrong_count_fails_after_its_arguments():
    text = "(def f (x) x) (with Guests g (f (g.SetVar \"seen\" 1) 2))"
    result = PolicySet({"p": text}).evaluate(make_host(), [guest := make_guest("a")])
    assert "function f takes 1 argument(s), 2 given" in str(result.guest_errors[guest])
    assert guest.variables.get("seen") == 1


@pytest.mark.parametrize("word", ["def", "let", "with", "set", "defvar", "call", "op"])
def test_an_attribute_named_like_a_form_is_only_an_attribute(word):
    # The analyses walk the checked tree by its node kinds: the tuple of a
    # dotted symbol's attributes is no node.
    result = PolicySet({"p": f"(def f (g) g.{word}) (valid Host.{word})"}).evaluate(
        make_host(), [])
    assert "has no statistic" in str(result.error) and word in str(result.error)


@pytest.mark.parametrize("depth", [5, 12, 16])
def test_deeply_nested_with_items_read_from_closures(depth):
    # Past Python's limit on nested blocks the inner code moves into
    # closures: the items (and parameters) they read, bound further out,
    # must still be seen, and only read.
    guest = make_guest("a")
    inner = f"(+ a0.balloon_cur g{depth - 1}.balloon_cur)"
    withs = "".join(f"(with Guests g{i} " for i in range(depth))
    lets = "".join(f"(let ((a{i} x)) " for i in range(depth))
    text = f"(def f (x) {lets}{withs}{inner}{')' * 2 * depth}) (with Guests y (f y))"
    result = PolicySet({"p": text}).evaluate(make_host(), [guest])
    assert result.error is None, result.error
    value = result.values[-1]
    for _ in range(depth + 1):
        value = value[0]
    assert value == 2 * GUEST_STATS["balloon_cur"]
