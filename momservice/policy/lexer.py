"""Tokenizer of the policy language (see policy-language.md, "Lexical structure")."""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import PolicyError


class Token(NamedTuple):
    """One token: its kind, its value (already converted for numbers) and its line."""

    kind: str  # "num", "str", "sym", "op", "open", "close"
    value: object
    line: int


# Order matters: hex and octal before the plain integer (else "0x1F" would
# be 0 followed by the symbol x1F), floats before integers, and two-character
# operators before one-character ones.
_TOKEN_RE = re.compile(r"""
    (?P<ws>[ \t\r\n\f\v]+)
  | (?P<comment>\#[^\n]*)
  | (?P<hex>-?0[xX][0-9a-fA-F]+)
  | (?P<oct>-?0[oO][0-7]+)
  | (?P<float>-?[0-9]*\.[0-9]+(?:[eE][+-]?[0-9]+)?)
  | (?P<expint>-?(?:0|[1-9][0-9]*)[eE][+-]?[0-9]+)
  | (?P<int>-?(?:0|[1-9][0-9]*)(?![0-9eE]))
  | (?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')
  | (?P<sym>[A-Za-z_][A-Za-z0-9_.\-]*)
  | (?P<op><=|>=|<<|>>|==|!=|[-+*/<>])
  | (?P<open>[(\[{])
  | (?P<close>[)\]}])
""", re.VERBOSE)

_NUMBER_START = re.compile(r"-?[0-9.]")

#: Longest number literal: far beyond any real value, and short enough that
#: every integer it can spell still converts to decimal (Python refuses
#: past 4300 digits).
MAX_DIGITS = 1000
_NUMBER_KINDS = frozenset({"int", "float", "expint", "hex", "oct"})


def tokenize(text: str) -> list[Token]:
    """Split policy text into tokens; a character that starts no token is an error."""
    tokens: list[Token] = []
    append = tokens.append
    match = _TOKEN_RE.match
    line = 1
    pos = 0
    end = len(text)
    while pos < end:
        m = match(text, pos)
        if m is None:
            raise PolicyError(_describe_bad_text(text, pos), line)
        kind = m.lastgroup
        value = m.group()
        pos = m.end()
        if kind == "ws" or kind == "comment":
            line += value.count("\n")
            continue
        if kind in _NUMBER_KINDS and len(value) > MAX_DIGITS:
            raise PolicyError(f"number with more than {MAX_DIGITS} digits", line)
        if kind == "int":
            append(Token("num", int(value), line))
        elif kind == "float" or kind == "expint":
            append(Token("num", float(value), line))
        elif kind == "hex":
            append(Token("num", int(value, 16), line))
        elif kind == "oct":
            append(Token("num", int(value, 8), line))
        elif kind == "str":
            append(Token("str", value[1:-1], line))
            line += value.count("\n")
        else:
            append(Token(kind, value, line))
    return tokens


def _describe_bad_text(text: str, pos: int) -> str:
    char = text[pos]
    if char in "\"'":
        return "unterminated string"
    if _NUMBER_START.match(text, pos):
        word = re.match(r"[-0-9A-Za-z_.]+", text[pos:])
        shown = word.group() if word else char
        if re.fullmatch(r"-?0[0-9]+", shown):
            return f"malformed number {shown!r} (write octal as 0o...)"
        return f"malformed number {shown!r}"
    return f"unexpected character {char!r}"
