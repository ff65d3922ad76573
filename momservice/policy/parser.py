"""Parser of the policy language: tokens to a tree that keeps line numbers."""

from __future__ import annotations

from .errors import PolicyError
from .lexer import tokenize

#: Deeper nesting than this is refused at parse time, so neither the
#: compiler nor the evaluator can exhaust the Python stack on odd input.
MAX_NESTING = 200

_CLOSER = {"(": ")", "[": "]", "{": "}"}


class Atom:
    """A number, string, symbol or operator in the source text."""

    __slots__ = ("kind", "value", "line")

    def __init__(self, kind: str, value: object, line: int) -> None:
        self.kind = kind  # "num", "str", "sym" or "op"
        self.value = value
        self.line = line

    def __repr__(self) -> str:
        return f"Atom({self.kind}, {self.value!r}, line {self.line})"


class Form:
    """A bracketed form: ``(...)`` or ``[...]`` (a call) or ``{...}`` (a block)."""

    __slots__ = ("bracket", "items", "line")

    def __init__(self, bracket: str, items: list, line: int) -> None:
        self.bracket = bracket
        self.items = items
        self.line = line

    def __repr__(self) -> str:
        return f"Form({self.bracket}{self.items!r}, line {self.line})"


Node = Atom | Form


def parse(text: str) -> list[Node]:
    """Parse a policy text into its top-level expressions."""
    # An explicit stack instead of recursion: arbitrary input must end in a
    # PolicyError, never in a RecursionError.
    stack: list[tuple[str | None, list, int]] = [(None, [], 0)]
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
