"""Parser of the policy language: tokens to a tree that keeps line numbers."""

from __future__ import annotations

from .errors import PolicyError
from .lexer import (_FIRST, CLOSE, NEWLINE, NUMBER, OPEN, STRING, SYMBOL, number, scan,
                    tokenize)

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

    __slots__ = ("bracket", "items", "line", "size")

    def __init__(self, bracket: str, items: list, line: int) -> None:
        self.bracket = bracket
        self.items = items
        self.line = line
        #: Number of nodes in the form, itself included (see compiler.weight).
        self.size: int | None = None

    def __repr__(self) -> str:
        return f"Form({self.bracket}{self.items!r}, line {self.line})"


Node = Atom | Form


def parse(text: str) -> list[Node]:
    """Parse a policy text into its top-level expressions."""
    try:
        return _parse(scan(text))
    except PolicyError:
        # The whole text is tokenized before it is parsed: a lexical error
        # anywhere wins over a misplaced bracket before it.
        tokenize(text)
        raise


def _parse(tokens: list[tuple[str, str]]) -> list[Node]:
    # An explicit stack instead of recursion: arbitrary input must end in a
    # PolicyError, never in a RecursionError.  The tokens come straight from
    # the lexer's scan (no Token objects): loading a policy is mostly this.
    stack: list[tuple[str, list, int]] = []
    items: list = []
    opener = ""
    start = 0
    line = 1
    first = _FIRST
    for value, bad in tokens:
        if bad:
            raise PolicyError(f"unexpected character {bad!r}", line)  # tokenize says more
        kind = first.get(value[0])
        if kind == SYMBOL:
            items.append(Atom("sym", value, line))
        elif kind == NEWLINE:
            line += value.count("\n")
        elif kind == OPEN:
            if len(stack) >= MAX_NESTING:
                raise PolicyError(f"forms nested deeper than {MAX_NESTING}", line)
            stack.append((opener, items, start))
            opener, items, start = value, [], line
        elif kind == CLOSE:
            if not stack:
                raise PolicyError(f"unexpected {value!r}", line)
            if _CLOSER[opener] != value:
                raise PolicyError(
                    f"{value!r} does not close {opener!r} opened on line {start}", line)
            form = Form(opener, items, start)
            opener, items, start = stack.pop()
            items.append(form)
        elif kind == NUMBER or (len(value) > 1 and value[0] == "-"):
            items.append(Atom("num", number(value, line), line))
        elif kind == STRING:
            items.append(Atom("str", value[1:-1], line))
            line += value.count("\n")
        else:
            items.append(Atom("op", value, line))
    if stack:
        raise PolicyError(f"{opener!r} is never closed", start)
    return items
