"""Forms, scopes, special forms and built-ins of the policy language.

Every expectation comes from docs/policy-language.md ("Forms", "Scopes",
"Special forms and built-ins" and the deliberate differences from MoM).
"""

from __future__ import annotations

import pytest

from momservice.policy import Entity, PolicyError, PolicySet

GUEST_STATS = {
    "balloon_cur": 1000, "balloon_max": 2000, "balloon_min": 0,
    "mem_available": 2000, "mem_unused": 500, "major_fault": 0,
    "minor_fault": 0, "swap_in": 0, "swap_out": 0,
}


# -- helpers -----------------------------------------------------------------

def make_host(**stats) -> Entity:
    host = Entity.host()
    host.add_sample({"mem_available": 1000, "mem_free": 250, **stats})
    return host


def make_guest(name: str, **stats) -> Entity:
    guest = Entity.guest({"name": name, "uuid": f"uuid-{name}", "pid": 4000})
    guest.add_sample({**GUEST_STATS, **stats})
    return guest


def evaluate(text: str, guests=(), params=None, host=None):
    return PolicySet({"p": text}).evaluate(host or make_host(), list(guests), params)


def values(text: str, **kw) -> list:
    result = evaluate(text, **kw)
    assert result.error is None, str(result.error)
    return result.values


def value(text: str, **kw):
    return values(text, **kw)[-1]


def error_of(text: str, **kw) -> PolicyError:
    """The PolicyError a text produces, at load time or at evaluation time."""
    try:
        policy_set = PolicySet({"p": text})
    except PolicyError as e:
        return e
    result = policy_set.evaluate(kw.get("host") or make_host(),
                                 list(kw.get("guests", ())), kw.get("params"))
    assert result.error is not None, f"no error for {text!r}: {result.values}"
    return result.error


def same(a, b) -> bool:
    return type(a) is type(b) and a == b


# -- forms ---------------------------------------------------------------------

def test_round_and_square_calls_are_the_same():
    assert values("(max 1 9 3) [max 1 9 3]") == [9, 9]


@pytest.mark.parametrize("text", ["(2 + 2)", '("max" 1 2)', "((max 1 2) 3)",
                                  "(1.5 2)", "({max} 1 2)"])
def test_head_must_be_a_symbol_or_operator(text):
    e = error_of("1\n" + text)
    assert e.line == 2


@pytest.mark.parametrize("form", ['("text")', "(2 + 2)", "((max 1 2) 3)", "({max} 1 2)"])
def test_bad_head_in_a_branch_never_taken_loads_and_runs(form):
    # MoM is lazy here: only an evaluated bad head is an error.
    policy_set = PolicySet({"p": f'(if 0 {form} 7)\n(if 1 8 {form})'})
    assert policy_set.evaluate(make_host(), []).values == [7, 8]


def test_bad_head_is_a_warning_at_compile_time_with_its_line():
    from momservice.policy import compile_policy
    warnings: list[PolicyError] = []
    compile_policy('1\n(if 0\n  ("text")\n  1)', "p", warnings)
    assert [(w.line, w.policy) for w in warnings] == [(3, "p")]
    assert "symbol" in warnings[0].message


def test_bad_head_fails_every_time_it_is_evaluated():
    policy_set = PolicySet({"p": '(def f () ("text"))\n1\n(f)'})
    for _ in range(2):
        result = policy_set.evaluate(make_host(), [])
        assert result.error is not None and result.error.line == 1
        assert result.error.policy == "p"


def test_block_yields_last_and_evaluates_each():
    result = evaluate('{ (Host.Control "a" 1) (Host.Control "b" 2) 3 }')
    assert result.error is None
    assert result.values == [3]
    assert result.host_controls == {"a": 1, "b": 2}


def test_block_does_not_open_a_scope():
    assert values("{ (defvar x 5) } x") == [5, 5]


def test_block_inside_function_binds_in_function_scope():
    # { } does not open a scope, so the defvar is in the function's scope...
    assert value("(def f () { (defvar inner 3) inner }) (f)") == 3
    # ...and does not leak from it.
    assert "undefined symbol inner" in str(error_of("(def f () { (defvar inner 3) }) (f) inner"))


def test_nil_is_none():
    assert values("nil") == [None]
    assert value("(valid nil)") is False


def test_unbound_symbol_error_message():
    e = error_of("(defvar a 1)\n\n(+ a frobnicate)")
    assert "undefined symbol frobnicate on line 3" in str(e)
    assert e.line == 3


def test_unbound_symbol_line_is_the_symbols_line():
    e = error_of("(+ 1\n   2)\n(+ 1\n\n   unbound_in_form)")
    assert e.line == 5
    assert "undefined symbol unbound_in_form on line 5" in str(e)


def test_unbound_symbol_error_names_the_policy():
    result = PolicySet({"10-site": "1\nnosuchthing"}).evaluate(make_host(), [])
    assert str(result.error) == "policy 10-site: undefined symbol nosuchthing on line 2"
    assert result.error.policy == "10-site"


def test_dotted_attribute_reads_newest_statistic():
    host = Entity.host()
    host.add_sample({"mem_free": 1, "mem_available": 10})
    host.add_sample({"mem_free": 2, "mem_available": 10})
    assert value("Host.mem_free", host=host) == 2


def test_dotted_attribute_looks_up_through_scopes():
    g = make_guest("vm1", balloon_cur=777)
    assert value("(let ((x (with Guests g g))) 0) (with Guests g (let ((y g)) y.balloon_cur))",
                 guests=[g]) == [777]


@pytest.mark.parametrize("form", ["set", "setq"])
def test_cannot_assign_through_a_dot(form):
    e = error_of(f"1\n({form} Host.mem_free 1)")
    assert e.line == 2


def test_assign_through_dot_does_not_change_the_entity():
    host = make_host(mem_free=250)
    try:
        ps = PolicySet({"p": "(set Host.mem_free 1)"})
    except PolicyError:
        return
    ps.evaluate(host, [])
    assert host.latest["mem_free"] == 250


# -- dynamic scoping -------------------------------------------------------------

def test_function_body_sees_callers_variables():
    assert value("(def show () y) (let ((y 42)) (show))") == 42


def test_function_body_sees_callers_function_parameters():
    assert value("(def inner () outer_param) (def outer (outer_param) (inner)) (outer 7)") == 7


def test_function_body_without_caller_binding_fails():
    e = error_of("(def show () y)\n(show)")
    assert "undefined symbol y" in str(e)


def test_misspelt_parameter_reads_the_callers_loop_variable():
    # The helper's parameter is `gst`, but its body says `g`: it reads the
    # caller's loop variable g.
    guests = [make_guest("a", balloon_cur=1000), make_guest("b", balloon_cur=500)]
    result = evaluate("""
        (def shrink (gst) (g.Control "balloon_target" (- g.balloon_cur 100)))
        (with Guests g (shrink g))
    """, guests=guests)
    assert result.error is None, result.error
    assert result.guest_controls == {guests[0]: {"balloon_target": 900},
                                     guests[1]: {"balloon_target": 400}}


# -- scopes opened and not opened ----------------------------------------------------

def test_let_opens_a_scope():
    e = error_of("(let ((a 1)) a)\na")
    assert "undefined symbol a on line 2" in str(e)


def test_let_shadows_and_restores():
    assert values("(defvar a 1) (let ((a 2)) a) a") == [1, 2, 1]


def test_function_call_opens_a_scope():
    e = error_of("(def f (p) p) (f 1)\np")
    assert "undefined symbol p on line 2" in str(e)


def test_function_parameter_shadows_and_restores():
    assert values("(defvar p 1) (def f (p) p) (f 2) p") == [1, "f", 2, 1]


def test_with_item_opens_a_scope():
    g = make_guest("vm1")
    e = error_of("(with Guests g 1)\ng", guests=[g])
    assert "undefined symbol g on line 2" in str(e)


def test_each_with_item_has_its_own_scope():
    # defvar in a fresh scope for every item: each binds anew.
    guests = [make_guest("a"), make_guest("b"), make_guest("c")]
    assert value('(with Guests g (defvar n (g.Prop "name")))', guests=guests) == ["a", "b", "c"]


def test_defvar_in_with_item_does_not_leak():
    e = error_of("(with Guests g (defvar tmp 1))\ntmp", guests=[make_guest("a")])
    assert "undefined symbol tmp on line 2" in str(e)


def test_if_does_not_open_a_scope():
    assert values("(if 1 (defvar x 5) 0) x") == [5, 5]
    assert values("(if 0 0 (defvar y 6)) y") == [6, 6]


# -- defvar ----------------------------------------------------------------------------

def test_defvar_binds_and_yields_the_value():
    assert values("(defvar x 1) x") == [1, 1]


def test_second_defvar_in_same_scope_changes_nothing():
    assert values("(defvar x 1) (defvar x 2) x") == [1, 1, 1]


def test_second_defvar_in_let_scope_changes_nothing():
    assert value("(let ((a 1)) (defvar a 5) (defvar b 2) (defvar b 3) (+ a b))") == 3
    assert value("(let ((a 1)) (defvar a 5))") == 1


def test_defvar_in_function_binds_in_function_scope_even_if_global_exists():
    # x is bound globally but not in the function's scope: defvar binds there.
    assert values("(defvar x 1) (def f () { (defvar x 2) x }) (f) x") == [1, "f", 2, 1]


def test_defvar_in_function_does_not_leak():
    e = error_of("(def f () (defvar inner 3))\n(f)\ninner")
    assert "undefined symbol inner on line 3" in str(e)


def test_defvar_of_a_parameter_keeps_the_argument():
    assert value("(def f (p) (defvar p 9)) (f 3)") == 3


def test_defvar_in_let_shadows_outer_without_touching_it():
    assert values("(defvar x 1) (let ((y 0)) (defvar x 2) x) x")[-2:] == [2, 1]


def test_defvar_value_evaluated_in_scope():
    assert value("(defvar a 2) (defvar b (* a 3)) b") == 6


# -- set / setq ------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["set", "setq"])
def test_set_yields_the_value(form):
    assert values(f"(defvar x 0) ({form} x 7) x") == [0, 7, 7]


@pytest.mark.parametrize("form", ["set", "setq"])
def test_set_assigns_to_nearest_binding_scope(form):
    assert values(f"(defvar x 1) (let ((x 2)) ({form} x 5) x) x") == [1, 5, 1]


@pytest.mark.parametrize("form", ["set", "setq"])
def test_set_from_function_reaches_global(form):
    assert values(f"(defvar counter 0) (def inc () ({form} counter (+ counter 1)))"
                  " (inc) (inc) counter")[-1] == 2


def test_set_reaches_callers_let_binding():
    # Dynamic scoping: the nearest binding is the caller's let.
    assert values("(defvar x 1) (def poke () (set x 99)) (let ((x 2)) (poke) x) x")[-2:] == [99, 1]


@pytest.mark.parametrize("form", ["set", "setq"])
def test_set_of_unbound_name_is_an_error(form):
    e = error_of(f"(defvar a 1)\n({form} nosuch 5)")
    assert e.line == 2
    assert "nosuch" in str(e)


def test_set_of_unbound_name_does_not_create_it():
    e = error_of("(if 1 (set nosuch 5) 0)\n")
    assert e.line == 1


# -- fresh global scope per evaluation ---------------------------------------------------

def test_every_evaluation_starts_from_fresh_globals():
    ps = PolicySet({"p": "(defvar n 0) (set n (+ n 1)) n"})
    host = make_host()
    first = ps.evaluate(host, [])
    second = ps.evaluate(host, [])
    assert first.values == [0, 1, 1]
    assert second.values == [0, 1, 1]


def test_defvar_does_not_leak_into_the_next_evaluation():
    ps = PolicySet({"a": "(defvar leaked 5)"})
    ps.evaluate(make_host(), [])
    ps.set_policy("a", "leaked")
    result = ps.evaluate(make_host(), [])
    assert "undefined symbol leaked" in str(result.error)


def test_def_does_not_leak_into_the_next_evaluation():
    ps = PolicySet({"a": "(def helper () 1)"})
    ps.evaluate(make_host(), [])
    ps.set_policy("a", "(helper)")
    result = ps.evaluate(make_host(), [])
    assert result.error is not None


# -- def / defun -----------------------------------------------------------------------

@pytest.mark.parametrize("form", ["def", "defun"])
def test_def_yields_the_name_string(form):
    assert values(f"({form} double (x) (* x 2)) (double 21)") == ["double", 42]
    assert same(value(f"({form} double (x) (* x 2))"), "double")


def test_def_without_parameters():
    assert value("(def five () 5) (five)") == 5


def test_def_with_several_body_expressions_yields_last():
    result = evaluate('(def f () (Host.Control "a" 1) 2) (f)')
    assert result.values[-1] == 2
    assert result.host_controls == {"a": 1}


def test_def_inside_function_is_global():
    assert value("(def outer () (def inner () 5)) (outer) (inner)") == 5


def test_def_inside_let_is_global():
    assert value("(let ((a 1)) (def g () 8)) (g)") == 8


def test_later_def_replaces_earlier():
    assert values("(def f () 1) (f) (def f () 2) (f)") == ["f", 1, "f", 2]


def test_later_def_in_a_later_policy_replaces():
    ps = PolicySet({"00-a": "(def f () 1)", "10-b": "(def f () 2)", "20-c": "(f)"})
    assert ps.evaluate(make_host(), []).values == ["f", "f", 2]


def test_def_inside_function_replaces_global_definition():
    assert values("(def f () 1) (def redefine () (def f () 2)) (f) (redefine) (f)")[-3:] == \
        [1, "f", 2]


def test_user_function_call_evaluates_arguments():
    assert value("(def add (a b) (+ a b)) (add (* 2 3) (- 10 4))") == 12


@pytest.mark.parametrize("call, given", [("(resize_guest 1)", 1),
                                         ("(resize_guest 1 2 3)", 3),
                                         ("(resize_guest)", 0)])
def test_wrong_argument_count_names_function_and_line(call, given):
    e = error_of(f"(def resize_guest (a b) (+ a b))\n\n{call}")
    assert "resize_guest" in str(e)
    assert e.line == 3
    assert "on line 3" in str(e)


def test_call_of_undefined_function_is_an_error_with_line():
    e = error_of("1\n(nosuchfunction 1 2)")
    assert e.line == 2
    assert "nosuchfunction" in str(e)


def test_recursion_works():
    assert value("(def fact (n) (if (<= n 1) 1 (* n (fact (- n 1))))) (fact 10)") == 3628800


# -- let ---------------------------------------------------------------------------------

def test_let_binds_sequentially():
    assert value("(let ((a 1) (b (+ a 1)) (c (* b 10))) c)") == 20


def test_let_yields_last_body_expression():
    result = evaluate('(let ((a 1)) (Host.Control "x" a) (+ a 1))')
    assert result.values == [2]
    assert result.host_controls == {"x": 1}


def test_let_with_empty_bindings():
    assert value("(let () 5)") == 5
    assert value("(let () 1 2 3)") == 3


def test_let_value_sees_outer_binding_of_same_name():
    assert value("(defvar a 1) (let ((a (+ a 1))) a)") == 2


# -- if ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["(if 1 2)", "(if 1)", "(if)", "(if 1 2 3 4)"])
def test_if_takes_exactly_three_arguments(text):
    e = error_of("1\n" + text)
    assert e.line == 2


def test_if_chooses_branch_by_truth():
    assert values('(if 1 "t" "f") (if 0 "t" "f") (if "" "t" "f") (if nil "t" "f") '
                  '(if "x" "t" "f") (if 0.0 "t" "f")') == ["t", "f", "f", "f", "t", "f"]


def test_if_evaluates_only_the_chosen_branch_side_effect():
    result = evaluate('(if (> 2 1) (Host.Control "then" 1) (Host.Control "else" 2))')
    assert result.host_controls == {"then": 1}
    result = evaluate('(if (< 2 1) (Host.Control "then" 1) (Host.Control "else" 2))')
    assert result.host_controls == {"else": 2}


def test_if_does_not_evaluate_the_other_branch_error():
    assert value("(if 1 5 (undefined_function_call 1))") == 5
    assert value("(if 0 no_such_symbol 6)") == 6


# -- with --------------------------------------------------------------------------------

def test_with_yields_list_of_results():
    guests = [make_guest("a", balloon_cur=1), make_guest("b", balloon_cur=2)]
    assert value("(with Guests g (* g.balloon_cur 10))", guests=guests) == [10, 20]


def test_with_over_empty_list_yields_empty_list():
    assert value("(with Guests g 1)") == []


def test_with_over_dotted_list_symbol():
    guest = make_guest("vm1")
    guest.add_sample({**GUEST_STATS, "io_tune": [3, 4, 5]})
    assert value("(with Guests guest (with guest.io_tune t (* t 2)))",
                 guests=[guest]) == [[6, 8, 10]]


def test_with_over_a_list_held_in_a_variable():
    guests = [make_guest("a"), make_guest("b")]
    assert value("(defvar names (with Guests g (g.Prop \"name\"))) "
                 "(with names n (+ n \"!\"))", guests=guests) == ["a!", "b!"]


def test_with_list_must_be_a_symbol():
    e = error_of("1\n(with (max 1 2) x x)")
    assert e.line == 2


def test_with_body_sees_outer_variables():
    guests = [make_guest("a", balloon_cur=100)]
    assert value("(defvar k 3) (with Guests g (* k g.balloon_cur))", guests=guests) == [300]


# -- and / or / not ------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ('(and 1 "")', ""), ('(or "" 17)', 17), ("(and 1 2)", 2), ("(and 0 2)", 0),
    ("(or 0 nil)", None), ("(or nil 0)", 0), ('(or "a" 2)', "a"), ("(and 5)", 5),
    ("(or 0)", 0), ("(and 1 2 3 0 5)", 0), ("(or 0 0 4 5)", 4), ("(and 1 nil 3)", None),
])
def test_and_or_yield_the_deciding_operand(text, expected):
    assert same(value(text), expected)


@pytest.mark.parametrize("text", ["(and)", "(or)"])
def test_and_or_need_at_least_one_operand(text):
    e = error_of("1\n" + text)
    assert e.line == 2


def test_and_stops_at_the_deciding_operand():
    result = evaluate('(and 0 (Host.Control "ran" 1))')
    assert result.host_controls == {}
    assert value("(and 0 no_such_symbol)") == 0


def test_or_stops_at_the_deciding_operand():
    result = evaluate('(or 1 (Host.Control "ran" 1))')
    assert result.host_controls == {}
    assert value("(or 1 no_such_symbol)") == 1


def test_and_valid_guard_with_nil_does_not_fail():
    # Deliberate difference from MoM: and stops at the deciding operand.
    assert value("(defvar x nil) (and (valid x) (> x 3))") is False
    assert value("(defvar x 5) (and (valid x) (> x 3))") is True


def test_or_guard_with_nil_does_not_fail():
    assert value("(defvar x nil) (or (null x) (> x 3))") is True


@pytest.mark.parametrize("text, expected", [
    ("(not 0)", True), ("(not 1)", False), ('(not "")', True), ('(not "a")', False),
    ("(not nil)", True), ("(not (> 1 2))", True),
])
def test_not(text, expected):
    assert same(value(text), expected)


@pytest.mark.parametrize("text", ["(not)", "(not 1 2)"])
def test_not_takes_exactly_one_operand(text):
    e = error_of("1\n" + text)
    assert e.line == 2


# -- arithmetic ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("(+ 1 2)", 3), ("(- 5 3)", 2), ("(* 4 5)", 20), ("(/ 11 2)", 5.5),
    ("(/ 4 2)", 2.0), ("(+ 1.5 1)", 2.5), ("(- 3 5)", -2), ('(+ "ab" "cd")', "abcd"),
    ('(* 3 "ab")', "ababab"), ('(* "ab" 2)', "abab"), ("(* 2.5 2)", 5.0),
    ("(- 1 -1)", 2),
])
def test_arithmetic_python_semantics(text, expected):
    assert same(value(text), expected)


@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
@pytest.mark.parametrize("operands", ["", "1", "1 2 3"])
def test_arithmetic_takes_exactly_two_operands(op, operands):
    e = error_of(f"1\n({op} {operands})")
    assert e.line == 2


def test_division_by_zero_is_a_policy_error_with_line():
    e = error_of("1\n(/ 1 0)")
    assert e.line == 2


def test_adding_number_and_string_is_a_policy_error_with_line():
    e = error_of('1\n(+ 1 "a")')
    assert e.line == 2


def test_arithmetic_on_nil_is_a_policy_error_with_line():
    e = error_of("1\n(* nil 2)")
    assert e.line == 2


# -- comparisons -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("(< 1 2)", True), ("(< 2 1)", False), ("(> 2 1)", True), ("(> 1 2)", False),
    ("(<= 2 2)", True), ("(<= 3 2)", False), ("(>= 2 2)", True), ("(>= 1 2)", False),
    ("(== 2 2)", True), ("(== 2 2.0)", True), ("(== 1 2)", False), ('(== "a" "a")', True),
    ("(!= 1 2)", True), ("(!= 1 1)", False), ("(== nil nil)", True), ('(< "a" "b")', True),
])
def test_comparisons_yield_true_or_false(text, expected):
    assert value(text) is expected


@pytest.mark.parametrize("op", ["<", ">", "<=", ">=", "==", "!="])
@pytest.mark.parametrize("operands", ["1", "1 2 3"])
def test_comparisons_take_two_operands(op, operands):
    e = error_of(f"1\n({op} {operands})")
    assert e.line == 2


def test_ordering_nil_is_a_policy_error_with_line():
    e = error_of("1\n(< nil 2)")
    assert e.line == 2


# -- shifts ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("(<< 1 4)", 16), ("(>> 256 4)", 16), ("(<< 3 0)", 3), ("(>> 1 1)", 0), ("(<< 0x10 1)", 32),
])
def test_shifts(text, expected):
    assert same(value(text), expected)


def test_shift_of_float_is_a_policy_error_with_line():
    e = error_of("1\n(<< 1.5 2)")
    assert e.line == 2


# -- min / max / abs ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("(min 3 1 2)", 1), ("(max 3 1 2)", 3), ("(min 7)", 7), ("(max 7)", 7),
    ("(min 2 1.5)", 1.5), ("(max -1 -5)", -1), ("(min 4 9)", 4), ("(max 4 9)", 9),
])
def test_min_max(text, expected):
    assert same(value(text), expected)


@pytest.mark.parametrize("text", ["(min)", "(max)"])
def test_min_max_need_at_least_one_operand(text):
    e = error_of("1\n" + text)
    assert e.line == 2


@pytest.mark.parametrize("text, expected", [
    ("(abs -5)", 5), ("(abs 5)", 5), ("(abs -2.5)", 2.5), ("(abs 0)", 0),
])
def test_abs(text, expected):
    assert same(value(text), expected)


# -- null / valid --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("(null nil)", True), ('(null "")', True), ("(null '')", True), ("(null)", True),
    ("(null 0)", False), ("(null 5)", False), ("(null 0.0)", False), ('(null "a")', False),
    ('(null nil "")', True), ("(null nil 1)", False), ("(null 1 nil)", False),
    ("(null (with Guests g 1))", True),
])
def test_null(text, expected):
    assert value(text) is expected


def test_null_of_non_empty_list_is_false():
    assert value("(null (with Guests g 1))", guests=[make_guest("a")]) is False


@pytest.mark.parametrize("text, expected", [
    ("(valid)", True), ("(valid 1)", True), ("(valid nil)", False), ("(valid 1 nil)", False),
    ('(valid 0 "")', True), ("(valid nil nil)", False),
])
def test_valid(text, expected):
    assert value(text) is expected


# -- debug -----------------------------------------------------------------------------------------

def test_debug_yields_last_and_records_message():
    result = evaluate('(debug "marker-text" 41 42)')
    assert result.error is None
    assert result.values == [42]
    assert any("marker-text" in m for m in result.messages)
    assert any("41" in m for m in result.messages)


def test_debug_single_value():
    result = evaluate('(+ 1 (debug 5))')
    assert result.values == [6]
    assert any("5" in m for m in result.messages)


# -- deliberate difference: argument evaluation ----------------------------------------------------

def test_arguments_are_evaluated_in_the_callers_scope():
    # (f b a) for (def f (a b) ...): a gets the caller's b, b the caller's a.
    assert value("(def f (a b) (- a b)) (let ((a 1) (b 10)) (f b a))") == 9
    assert value('(def f (a b) (+ a b)) (let ((a "A") (b "B")) (f b a))') == "BA"


def test_arguments_swapped_at_global_scope():
    assert value("(defvar a 1) (defvar b 2) (def f (a b) (list2 a b)) "
                 "(def list2 (x y) (+ (* x 10) y)) (f b a)") == 21


# -- deliberate difference: errors inside with Guests ----------------------------------------------

def test_error_in_one_guest_item_skips_only_that_guest():
    good1 = make_guest("good1", balloon_cur=1000)
    bad = make_guest("bad", balloon_cur=0)
    good2 = make_guest("good2", balloon_cur=500)
    result = evaluate("""
        (Host.Control "ksm_run" 1)
        (with Guests g {
            (g.Control "balloon_target" 1)
            (g.Control "balloon_target" (/ 1000 g.balloon_cur))
        })
        (Host.Control "ksm_pages_to_scan" 64)
    """, guests=[good1, bad, good2])
    assert result.error is None, result.error
    assert result.guest_controls == {good1: {"balloon_target": 1.0},
                                     good2: {"balloon_target": 2.0}}
    assert bad not in result.guest_controls
    assert set(result.guest_errors) == {bad}
    assert isinstance(result.guest_errors[bad], PolicyError)
    assert result.guest_errors[bad].line == 5
    # Evaluation went on after the loop.
    assert result.host_controls == {"ksm_run": 1, "ksm_pages_to_scan": 64}


def test_error_in_guest_item_inside_a_function():
    guests = [make_guest("a"), make_guest("b", balloon_cur=0), make_guest("c")]
    result = evaluate("""
        (def shrink (x)
            (x.Control "balloon_target" (/ 100 x.balloon_cur)))
        (with Guests g (shrink g))
    """, guests=guests)
    assert result.error is None
    assert set(result.guest_controls) == {guests[0], guests[2]}
    assert set(result.guest_errors) == {guests[1]}
    assert result.guest_errors[guests[1]].line == 3


def test_guest_error_reported_with_guest_and_message():
    bad = make_guest("vm-broken")
    result = evaluate("1\n(with Guests g (+ g.balloon_cur nosuchvar))", guests=[bad])
    assert result.error is None
    err = result.guest_errors[bad]
    assert "undefined symbol nosuchvar on line 2" in str(err)
    assert bad.name == "vm-broken"
