"""Lexical structure and parsing of the policy language.

Every expectation comes from docs/policy-language.md ("Lexical structure"
and "Forms"); tokens are checked through what they evaluate to wherever
possible, so the tests do not depend on the parser's node classes.
"""

from __future__ import annotations

import pytest

from momservice.policy import Entity, PolicyError, PolicySet, parse


# -- helpers -----------------------------------------------------------------

def _host() -> Entity:
    host = Entity.host()
    host.add_sample({"mem_available": 1000, "mem_free": 250})
    return host


def evaluate(text: str):
    return PolicySet({"p": text}).evaluate(_host(), [], None)


def values(text: str) -> list:
    result = evaluate(text)
    assert result.error is None, str(result.error)
    return result.values


def value(text: str):
    return values(text)[-1]


def error_of(text: str) -> PolicyError:
    """The PolicyError a text produces, at load time or at evaluation time."""
    try:
        policy_set = PolicySet({"p": text})
    except PolicyError as e:
        return e
    result = policy_set.evaluate(_host(), [], None)
    assert result.error is not None, f"no error for {text!r}: {result.values}"
    return result.error


def syntax_error(text: str) -> PolicyError:
    """A text that must be refused when parsed (and so when loaded)."""
    with pytest.raises(PolicyError) as parse_info:
        parse(text)
    with pytest.raises(PolicyError) as load_info:
        PolicySet({"p": text})
    assert load_info.value.line == parse_info.value.line
    return parse_info.value


def same(a, b) -> bool:
    """Equal and of the same type (so 1 != 1.0 != True)."""
    return type(a) is type(b) and a == b


# -- comments and whitespace ---------------------------------------------------

def test_comment_runs_to_end_of_line():
    assert values("# a comment (with an unclosed bracket\n42 # trailing ( comment\n"
                  "# last line") == [42]


def test_comment_right_after_a_token():
    assert values("1# 2 3\n4") == [1, 4]


def test_hash_inside_a_string_is_not_a_comment():
    assert value('"# not a comment"') == "# not a comment"


def test_whitespace_kinds_separate_tokens():
    assert value("(+\t1\n\n  2)") == 3
    assert value("(+\r\n1\r\n2)") == 3


def test_newlines_count_lines_for_errors():
    e = error_of("1\n2\n\n(+ 1 @)")
    assert e.line == 4


def test_newlines_in_comments_count_lines():
    e = error_of("# one\n# two\n# three\nundefined_here")
    assert e.line == 4
    assert "undefined symbol undefined_here on line 4" in str(e)


def test_newlines_inside_a_string_count_lines():
    e = error_of('"first\nsecond\nthird"\nundefined_here')
    assert e.line == 4


# -- integers ----------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("0", 0), ("7", 7), ("125", 125), ("1234567890", 1234567890),
    ("-5", -5), ("-0", 0), ("-125", -125),
])
def test_integer(text, expected):
    assert same(value(text), expected)


def test_integer_followed_by_letter_is_integer_then_symbol():
    # `125f56` is the integer 125 followed by the symbol f56.
    assert value("(defvar f56 7) (+ 125f56)") == 132
    nodes = parse("125f56")
    assert [n.value for n in nodes] == [125, "f56"]


def test_integer_then_symbol_reads_the_symbol():
    e = error_of("(+ 125f56)")
    assert "undefined symbol f56" in str(e)


@pytest.mark.parametrize("text", ["017", "00", "0123", "-017", "(+ 1 017)"])
def test_leading_zero_is_a_syntax_error(text):
    e = syntax_error(text)
    assert e.line == 1


def test_leading_zero_error_has_its_line_and_refuses_the_file():
    text = "(defvar a 1)\n(defvar b 2)\n(defvar c 017)\n(defvar d 4)\n"
    e = syntax_error(text)
    assert e.line == 3
    assert "on line 3" in str(e)


@pytest.mark.parametrize("text", ["125e", "125E", "1e+", "1e-x"])
def test_integer_followed_by_e_without_exponent_is_an_error(text):
    # An integer is not followed by e/E, and the exponent form needs digits.
    syntax_error(text)


# -- integers with exponent ----------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("100e-2", 1.0), ("1e3", 1000.0), ("1E3", 1000.0), ("2e+1", 20.0),
    ("-3e2", -300.0), ("0e0", 0.0), ("5E-1", 0.5),
])
def test_integer_with_exponent_becomes_float(text, expected):
    assert same(value(text), expected)


def test_exponent_integer_is_one_token():
    assert [n.value for n in parse("100e-2")] == [1.0]


# -- floats --------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    (".3", 0.3), ("10.0e3", 10000.0), ("0.5", 0.5), ("-1.25", -1.25),
    ("-.5", -0.5), ("1.5e-3", 0.0015), ("2.5E2", 250.0), ("0.0", 0.0),
    ("3.25e+1", 32.5),
])
def test_float(text, expected):
    assert same(value(text), expected)


def test_float_arithmetic_with_glued_negative():
    assert value("(+ -5 -.5)") == -5.5


# -- hex and octal ---------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("0x1F", 31), ("0X1f", 31), ("0x0", 0), ("0xff", 255), ("0o17", 15),
    ("0o0", 0), ("0o777", 511),
])
def test_hex_and_octal(text, expected):
    assert same(value(text), expected)


def test_hex_in_arithmetic():
    assert value("(+ 0x10 0o10)") == 24


# -- strings -------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ('"hello world"', "hello world"),
    ("'single'", "single"),
    ('""', ""),
    ("''", ""),
    ('"it\'s"', "it's"),
    ("'say \"hi\"'", 'say "hi"'),
    ('"(not a form)"', "(not a form)"),
    ('"  spaced  "', "  spaced  "),
])
def test_string(text, expected):
    assert same(value(text), expected)


def test_backslash_escaped_double_quote_is_kept_literally():
    # The value is the text between the quotes, with no escape processing.
    assert value(r'"a\"b"') == 'a\\"b'
    assert len(value(r'"a\"b"')) == 4


def test_backslash_escaped_single_quote_is_kept_literally():
    assert value(r"'a\'b'") == "a\\'b"


def test_no_escape_processing_of_backslash_n():
    assert value(r'"a\nb"') == "a\\nb"
    assert len(value(r'"a\nb"')) == 4
    assert value(r'"tab\there"') == "tab\\there"


def test_string_may_span_lines():
    assert value('"one\ntwo"') == "one\ntwo"


def test_two_strings_in_a_row():
    assert value('(+ "ab" \'cd\')') == "abcd"


@pytest.mark.parametrize("text", ['"abc', "'abc", '(+ "a" "b)', r'"abc\"'])
def test_unterminated_string_is_an_error(text):
    syntax_error(text)


def test_unterminated_string_line():
    e = syntax_error('1\n2\n(+ "oops 1)\n')
    assert e.line == 3


# -- symbols ---------------------------------------------------------------------

def test_symbol_with_dot_is_one_symbol():
    nodes = parse("guest.balloon_cur")
    assert len(nodes) == 1 and nodes[0].value == "guest.balloon_cur"


def test_symbol_e3_is_a_symbol_not_a_number():
    assert value("(defvar e3 5) (+ e3 1)") == 6


def test_symbol_with_minus_is_one_symbol():
    assert value("(defvar max 10) (defvar pages 3) (defvar max-pages 4) max-pages") == 4
    assert [n.value for n in parse("max-pages")] == ["max-pages"]


def test_symbol_with_minus_and_digit():
    assert value("(defvar a 10) (defvar a-1 3) a-1") == 3


@pytest.mark.parametrize("name", ["_x", "X", "a_b", "abc123", "A.b-c_9", "x-"])
def test_symbol_forms(name):
    assert [n.value for n in parse(name)] == [name]


def test_symbols_are_case_sensitive():
    assert values("(defvar abc 1) (defvar ABC 2) abc ABC")[-2:] == [1, 2]


# -- operators -------------------------------------------------------------------

@pytest.mark.parametrize("op", ["+", "-", "*", "/", "<", ">", "<=", ">=", "<<", ">>",
                                "==", "!="])
def test_each_operator_is_one_token(op):
    assert [n.value for n in parse(op)] == [op]


@pytest.mark.parametrize("text, expected", [
    ("(<= 1 1)", True), ("(<= 2 1)", False), ("(>= 1 1)", True), ("(>= 1 2)", False),
    ("(< 1 1)", False), ("(> 1 1)", False), ("(<< 1 3)", 8), ("(>> 16 2)", 4),
    ("(== 2 2)", True), ("(!= 2 2)", False), ("(!= 2 3)", True),
])
def test_longest_match_operators(text, expected):
    assert same(value(text), expected)


def test_operators_glued_to_operands():
    # Longest match: "<=" then "1", not "<" "=1".
    assert value("(<=1 2)") is True
    assert value("(<<1 2)") == 4


@pytest.mark.parametrize("text", ["=", "!", "(= 1 1)", "(! 1)", "(=< 1 2)"])
def test_lone_equals_or_bang_is_an_error(text):
    syntax_error(text)


# -- minus and negative numbers --------------------------------------------------

def test_subtraction_needs_spaces():
    assert value("(- 5 3)") == 2


def test_glued_minus_is_a_negative_number():
    assert value("(- 5 -3)") == 8
    assert value("-5") == -5


def test_plus_is_never_part_of_a_number():
    # Only a minus can be glued to digits: "+5" is the operator then 5.
    assert value("(+5 3)") == 8
    assert value("(*2 3)") == 6
    assert value("(- -5 -5)") == 0


def test_minus_then_space_is_an_operator():
    nodes = parse("- 5")
    assert [n.value for n in nodes] == ["-", 5]
    nodes = parse("-5")
    assert [n.value for n in nodes] == [-5]


def test_negative_number_cannot_head_a_call():
    # (-5 3) is a call whose head is the number -5: not allowed.
    e = error_of("(-5 3)")
    assert e.line == 1


# -- brackets ----------------------------------------------------------------------

def test_round_bracket_call():
    assert value("(+ 1 2)") == 3


def test_square_bracket_call():
    assert value("[+ 1 2]") == 3
    assert value("[max 1 5 2]") == 5


def test_curly_block():
    assert value("{1 2 3}") == 3


def test_mixed_brackets_nest():
    assert value("[+ (+ 1 2) {3 4}]") == 7


@pytest.mark.parametrize("text", ["(+ 1 2]", "[+ 1 2)", "{1 2)", "(+ 1 2}", "{1 2]"])
def test_mismatched_bracket_is_an_error(text):
    syntax_error(text)


def test_unclosed_bracket_is_an_error():
    e = syntax_error("1\n(+ 1\n2\n")
    assert isinstance(e.line, int)


def test_stray_closing_bracket_is_an_error():
    e = syntax_error("1\n2)\n")
    assert e.line == 2


def test_very_deep_nesting_is_a_policy_error_not_a_crash():
    text = "(" * 5000 + ")" * 5000
    with pytest.raises(PolicyError):
        PolicySet({"p": text})


# -- any other character -----------------------------------------------------------

@pytest.mark.parametrize("char", list("@$%&;:,~^|?`\\") + ["é", "λ", "\u00a0"])
def test_other_character_is_a_syntax_error_with_its_line(char):
    e = syntax_error(f"(defvar a 1)\n# comment {char}\n(+ 1 {char}2)\n")
    assert e.line == 3
    assert "on line 3" in str(e)


def test_dot_alone_is_an_error():
    syntax_error("(+ 1 .)")


# -- parse results -----------------------------------------------------------------

def test_parse_returns_the_top_level_expressions():
    assert len(parse("(+ 1 2) 3 {4} [f x] # comment")) == 4


def test_parse_of_empty_text():
    assert parse("") == []
    assert parse("  # only a comment\n") == []
    assert values("") == []
