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

#: The same tokens as ``_TOKEN_RE`` for ``findall``, the commonest first
#: (symbols and brackets start with characters no other token starts with;
#: numbers keep their order, before the operators, for "-"):
#: blanks and comments are skipped by a prefix, each match is a pair
#: (token text, "") or ("", a character no token starts with), and the
#: kind of a token follows from its first character.  One ``findall`` does
#: the scanning in C; a loop over ``match`` objects costs several times more.
#: A newline is a token of its own (with the blank lines after it), so the
#: line count needs no counting of blanks.  The text scanned must end with
#: a newline: then no prefix is ever left without a token to precede.
_SCAN_RE = re.compile(r"""
    (?:[ \t\r\f\v]+|\#[^\n]*)*
    (?:(
        [A-Za-z_][A-Za-z0-9_.\-]*
      | [(\[{)\]}]
      | \n[ \t\r\n\f\v]*
      | -?0[xX][0-9a-fA-F]+
      | -?0[oO][0-7]+
      | -?[0-9]*\.[0-9]+(?:[eE][+-]?[0-9]+)?
      | -?(?:0|[1-9][0-9]*)[eE][+-]?[0-9]+
      | -?(?:0|[1-9][0-9]*)(?![0-9eE])
      | "(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'
      | <=|>=|<<|>>|==|!=|[-+*/<>]
    )|(.))
""", re.VERBOSE)

# Token kinds by first character, for the scan above.
NEWLINE, NUMBER, STRING, SYMBOL, OPERATOR, OPEN, CLOSE = range(7)
_FIRST: dict[str, int] = {"\n": NEWLINE, "(": OPEN, "[": OPEN, "{": OPEN,
                          ")": CLOSE, "]": CLOSE, "}": CLOSE,
                          '"': STRING, "'": STRING, ".": NUMBER}
_FIRST.update((c, SYMBOL) for c in
              "_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_FIRST.update((c, NUMBER) for c in "0123456789")
_FIRST.update((c, OPERATOR) for c in "<>=!+*/-")  # "-" followed by more: a number

#: Longest number literal: far beyond any real value, and short enough that
#: every integer it can spell still converts to decimal (Python refuses
#: past 4300 digits).
MAX_DIGITS = 1000
_NUMBER_KINDS = frozenset({"int", "float", "expint", "hex", "oct"})


def scan(text: str) -> list[tuple[str, str]]:
    """The raw tokens of a text for the parser (see ``_SCAN_RE``); a pair
    whose first item is empty holds a character that starts no token, and
    ``tokenize`` says what is wrong there."""
    return _SCAN_RE.findall(text + "\n")


def number(value: str, line: int) -> int | float:
    """The value of a number token of ``scan``."""
    if len(value) > MAX_DIGITS:
        raise PolicyError(f"number with more than {MAX_DIGITS} digits", line)
    if "x" in value or "X" in value:
        return int(value, 16)
    if "o" in value or "O" in value:
        return int(value, 8)
    if "." in value or "e" in value or "E" in value:
        return float(value)
    return int(value)


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
