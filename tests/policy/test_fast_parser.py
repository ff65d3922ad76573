"""The parser reads the lexer's raw scan; it must agree with ``tokenize``.

``parse`` takes its tokens from one ``findall`` (``lexer.scan``) instead of
``tokenize``'s Token objects, for speed.  The reference here is the plain
parser over ``tokenize``: for any text both give the same tree, or the
same PolicyError (message and line).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import momservice
from momservice.policy import PolicyError, parse
from momservice.policy.lexer import tokenize
from momservice.policy.parser import _CLOSER, MAX_NESTING, Atom, Form

PROJECT_ROOT = Path(momservice.__file__).resolve().parents[1]
SETTINGS = settings(max_examples=600, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def reference_parse(text: str) -> list:
    stack: list = [(None, [], 0)]
    for kind, value, line in tokenize(text):
        if kind == "open":
            if len(stack) > MAX_NESTING:
                raise PolicyError(f"forms nested deeper than {MAX_NESTING}", line)
            stack.append((value, [], line))
        elif kind == "close":
            opener, items, start = stack[-1]
            if opener is None:
                raise PolicyError(f"unexpected {value!r}", line)
            if _CLOSER[opener] != value:
                raise PolicyError(
                    f"{value!r} does not close {opener!r} opened on line {start}", line)
            stack.pop()
            stack[-1][1].append(Form(opener, items, start))
        else:
            stack[-1][1].append(Atom(kind, value, line))
    if len(stack) > 1:
        opener, _, start = stack[-1]
        raise PolicyError(f"{opener!r} is never closed", start)
    return stack[0][1]


def shape(nodes: list) -> list:
    """A tree as plain data, types of values included (1 is not 1.0)."""
    return [(n.kind, type(n.value).__name__, n.value, n.line) if isinstance(n, Atom)
            else (n.bracket, n.line, shape(n.items)) for n in nodes]


def outcome(parser, text: str):
    try:
        return shape(parser(text))
    except PolicyError as e:
        return ("error", e.message, e.line)


def assert_same(text: str) -> None:
    assert outcome(parse, text) == outcome(reference_parse, text)


def policy_texts() -> list[Path]:
    return sorted(PROJECT_ROOT.glob("policies/**/*.policy")) + \
        sorted(PROJECT_ROOT.glob("benchmarks/policies/**/*.policy"))


@pytest.mark.parametrize("path", policy_texts(), ids=lambda p: p.name)
def test_shipped_and_benchmark_policies(path):
    text = path.read_text()
    assert parse(text), "the policy parsed to nothing"
    assert_same(text)


@pytest.mark.parametrize("text", [
    "", "\n", "# only a comment", "1 # trailing comment", "(+ 1 2)\n# end",
    "  \t\r\n  x", "-", "-5", "- 5", "-.5", "-0x1F", "0o17", "1e3", "1E-3", ".5e2",
    "01", "1abc", "0x", "x.y.z", "a-b", "(- 1 -2)", "<= >= << >> == != < > + * /",
    '"a\nb" c', "'it''s'", '"\\"" x', '"unterminated', "'\\", "(1 2]", ")", "(", "{[()]}",
    "é", "(a\n  (b\n  c)", "1" * 1001, "0x" + "F" * 999, "\f\v1", "1\r\n2\r\n(",
    "(" * MAX_NESTING + ")" * MAX_NESTING, "(" * (MAX_NESTING + 1),
])
def test_edge_cases(text):
    assert_same(text)


_PIECES = st.sampled_from([
    "(", ")", "[", "]", "{", "}", " ", "\n", "\t", "#c\n", "1", "-", "0", "x", "o", "e",
    ".", "5", "a", "_b", "F", '"', "'", "\\", "<", "=", ">", "!", "+", "*", "/", "$",
    "nil", "def", "Host.mem_free", "1.5e3", "0x1f", "0o7", "-2", "\r", "\f",
])


@SETTINGS
@given(st.lists(_PIECES, max_size=40).map("".join))
def test_random_texts_parse_as_the_reference_does(text):
    assert_same(text)


@SETTINGS
@given(st.text(max_size=60))
def test_arbitrary_unicode_parses_as_the_reference_does(text):
    assert_same(text)
