"""The evaluation state of one run of a policy set, and the values it handles.

Scoping is dynamic.  Variables that a function of the set could see from
its caller live in ``Env.b``, shallow-bound: every name maps to a stack of
values, the innermost binding on top, so a lookup is one dict access
whatever the depth of the scope stack.  Variables no other function can
see are Python locals of the generated code (see ``codegen``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from .entity import Entity
from .errors import PolicyError
from .records import Writes


class Unbound:
    """The value of a generated local whose ``defvar`` has not run yet."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unbound>"


UNBOUND = Unbound()


class UserFunction:
    """A function made by ``def``: parameters, generated code, and its cost.

    ``run(env, line, *args)`` is the generated Python function; it charges
    ``weight`` (the size of the body in nodes) to the step budget on each
    call, so the budget tracks the work done, not just the calls.
    """

    __slots__ = ("name", "params", "nparams", "run", "weight", "policy")

    def __init__(self, name: str, params: tuple[str, ...], weight: int,
                 policy: str | None) -> None:
        self.name = name
        self.params = params
        self.nparams = len(params)
        self.run: Callable[..., Any] | None = None
        self.weight = weight
        self.policy = policy

    def __repr__(self) -> str:
        return f"<function {self.name}>"


class Builtin:
    """A built-in function: ``fn(env, args, line)`` with evaluated arguments."""

    __slots__ = ("name", "fn")

    def __init__(self, name: str, fn: Callable[["Env", list, int], Any]) -> None:
        self.name = name
        self.fn = fn

    def __repr__(self) -> str:
        return f"<builtin {self.name}>"


class Env:
    """Everything one evaluation changes: bindings, budget, requests."""

    __slots__ = ("b", "gframe", "steps", "depth", "max_depth", "controls",
                 "origins", "failed", "messages", "variables", "writes")

    def __init__(self, bindings: dict[str, Any], *, max_steps: int,
                 max_depth: int, keep_variables: bool = True) -> None:
        # A missing name reads as an empty stack: the generated code's
        # lookups need no membership test, and IndexError means unbound.
        self.b: defaultdict[str, list] = defaultdict(list)
        for name, value in bindings.items():
            self.b[name] = [value]
        #: Names bound in the global scope (defvar and def add to it).
        self.gframe: set[str] = set(bindings)
        self.steps = max_steps
        self.depth = 0
        self.max_depth = max_depth
        self.controls: dict[Entity, dict[str, Any]] = {}
        #: Where each control got its value: control name -> entity ->
        #: (policy, line) of the last ``Control`` call, the one that wins.
        self.origins: defaultdict[str, dict[Entity, tuple[str | None, int]]] = \
            defaultdict(dict)
        self.failed: dict[Entity, PolicyError] = {}
        self.messages: list[str] = []
        #: SetVar writes of a trial run, kept here instead of on the
        #: entities (None: written through, kept across evaluations).
        self.variables: dict[Entity, dict[str, Any]] | None = \
            None if keep_variables else {}
        #: What the setters of records asked (see ``records``), by record.
        self.writes: Writes = {}

    def define_global(self, name: str, value: Any) -> None:
        """Bind in the global scope, beneath any inner bindings of the name."""
        stack = self.b[name]
        if name in self.gframe:
            stack[0] = value  # global bindings always sit at the bottom
        else:
            self.gframe.add(name)
            stack.insert(0, value)

    def defvar_global(self, name: str, value: Any) -> Any:
        """``defvar`` in the global scope: bind unless bound there already."""
        if name in self.gframe:
            return self.b[name][-1]
        self.gframe.add(name)
        self.b[name].append(value)
        return value

    def guest_failed(self, guest: Entity, error: PolicyError) -> None:
        """Record a guest's error: its controls of this evaluation are dropped."""
        self.failed.setdefault(guest, error)


def show(value: Any, limit: int = 60) -> str:
    """A short printable form of a policy value, for messages."""
    if value is None:
        text = "nil"
    elif value is True or value is False:
        text = "true" if value else "false"
    elif type(value) is int and value.bit_length() > 128:
        # repr() of a huge integer is slow, and refused past 4300 digits.
        text = f"<integer of {value.bit_length()} bits>"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
