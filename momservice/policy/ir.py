"""The intermediate form of a checked policy, and one walk over it.

The checker (``compiler``) builds it; the code generator and the analyses
(which names a policy binds, which statistics it reads) walk it.

Nodes are tuples whose first item names their kind:
  ("const", value)
  ("ref", base, attrs, full_name, line)       a symbol, maybe dotted
  ("block", [items])
  ("op", symbol, a, b, line)
  ("call", name, [args], line)
  ("mcall", base_ref, base_name, method, [args], line)
  ("fail", message, line)                      deferred error
  ("def", name, params, body, weight, index)   index into Checker.def_nodes
  ("let", [(name, value)], body)
  ("if", cond, then, other)
  ("with", source_ref, list_name, item, body, cost, line)
  ("and", [operands]) / ("or", [operands])
  ("defvar", name, value) / ("set", name, value, line)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def subnodes(node: tuple) -> list[tuple]:
    """The nodes directly inside ``node`` (not the tuples of names a node
    also holds: attributes, parameters)."""
    kind = node[0]
    if kind == "op":
        return [node[2], node[3]]
    if kind == "call":
        return node[2]
    if kind == "mcall":
        return [node[1], *node[4]]
    if kind in ("block", "and", "or"):
        return node[1]
    if kind == "if":
        return [node[1], node[2], node[3]]
    if kind == "let":
        return [*(value for _, value in node[1]), node[2]]
    if kind == "with":
        return [node[1], node[4]]
    if kind == "def":
        return [node[3]]
    if kind in ("defvar", "set"):
        return [node[2]]
    return []  # const, ref, fail


def walk(tree: Any) -> Iterator[tuple]:
    """Every node of an intermediate form (a node or a list of them)."""
    stack: list[tuple] = list(tree) if type(tree) is list else [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(subnodes(node))
