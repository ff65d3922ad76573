"""The evaluation state of one run of a policy set, and the values it handles.

Scoping is dynamic, implemented with shallow binding: every name maps to a
stack of values, the innermost binding on top, and each open scope (a
frame) remembers the names it bound so closing it pops exactly those.  A
lookup is then one dict access whatever the depth of the scope stack.
"""

from __future__ import annotations

from typing import Any, Callable

from .entity import Entity
from .errors import PolicyBudgetError, PolicyError, PolicyLimitError

Compiled = Callable[["Env"], Any]


class UserFunction:
    """A function made by ``def``: parameters, compiled body, and its cost.

    ``weight`` is the size of the body in nodes: each call charges it to the
    step budget, so the budget tracks the work done, not just the calls.
    """

    __slots__ = ("name", "params", "frame", "body", "weight", "policy")

    def __init__(self, name: str, params: tuple[str, ...], body: Compiled,
                 weight: int, policy: str | None) -> None:
        self.name = name
        self.params = params
        self.frame = frozenset(params)
        self.body = body
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
    """Everything one evaluation changes: bindings, frames, budget, requests."""

    __slots__ = ("b", "frames", "steps", "depth", "max_depth", "controls",
                 "failed", "messages", "variables")

    def __init__(self, bindings: dict[str, Any], *, max_steps: int,
                 max_depth: int, keep_variables: bool = True) -> None:
        self.b: dict[str, list] = {name: [value] for name, value in bindings.items()}
        # The global frame is mutable: defvar and def add to it.
        self.frames: list[set[str] | frozenset[str]] = [set(self.b)]
        self.steps = max_steps
        self.depth = 0
        self.max_depth = max_depth
        self.controls: dict[Entity, dict[str, Any]] = {}
        self.failed: dict[Entity, PolicyError] = {}
        self.messages: list[str] = []
        #: SetVar writes of a trial run, kept here instead of on the
        #: entities (None: written through, kept across evaluations).
        self.variables: dict[Entity, dict[str, Any]] | None = \
            None if keep_variables else {}

    def push(self, name: str, value: Any) -> None:
        stack = self.b.get(name)
        if stack is None:
            self.b[name] = [value]
        else:
            stack.append(value)

    def close_scope(self) -> None:
        b = self.b
        for name in self.frames.pop():
            b[name].pop()

    def define_global(self, name: str, value: Any) -> None:
        """Bind in the global scope, beneath any inner bindings of the name."""
        gframe = self.frames[0]
        stack = self.b.get(name)
        if name in gframe:
            stack[0] = value  # global bindings always sit at the bottom
        else:
            gframe.add(name)
            if stack is None:
                self.b[name] = [value]
            else:
                stack.insert(0, value)

    def charge(self, weight: int, line: int) -> None:
        self.steps -= weight
        if self.steps < 0:
            raise PolicyBudgetError("evaluation exceeded its step budget", line)

    def call(self, fn: UserFunction, args: list, line: int) -> Any:
        params = fn.params
        if len(args) != len(params):
            raise PolicyError(
                f"function {fn.name} takes {len(params)} argument(s), "
                f"{len(args)} given", line)
        self.steps -= fn.weight
        if self.steps < 0:
            raise PolicyBudgetError("evaluation exceeded its step budget", line)
        if self.depth >= self.max_depth:
            raise PolicyLimitError(
                f"calls nested deeper than {self.max_depth} in function {fn.name}",
                line)
        b = self.b
        for name, value in zip(params, args):
            stack = b.get(name)
            if stack is None:
                b[name] = [value]
            else:
                stack.append(value)
        self.frames.append(fn.frame)
        self.depth += 1
        try:
            return fn.body(self)
        except PolicyError as e:
            raise e.located(fn.policy)
        except RecursionError:
            # Deeply nested bodies can exhaust Python's stack before the
            # depth bound: the innermost call knows the line to blame.
            raise PolicyLimitError(f"calls nested too deeply in function {fn.name}",
                                   line, fn.policy) from None
        finally:
            self.depth -= 1
            for name in self.frames.pop():
                b[name].pop()

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
