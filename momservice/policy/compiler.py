"""Compile a parsed policy into Python closures, once.

Each node becomes a function ``f(env) -> value``.  Structure is checked
here (arity of special forms and operators, shapes of ``def``, ``let`` and
``with``), so a policy set that compiles can only fail on values at run time.
One exception, for MoM's sake: a call whose head is not a symbol or an
operator, such as ``("text")``, fails only when it is evaluated, as under
MoM, whose policies may carry one in a branch never taken.  It is reported
as a warning instead.
"""

from __future__ import annotations

from typing import Any, Callable

from .builtins import (ARITHMETIC_ERRORS, BINARY_OPERATORS, ENTITY_METHODS,
                       SEQUENCE_OPERATORS, operand_error)
from .entity import Entity
from .errors import PolicyBudgetError, PolicyError
from .parser import Atom, Form, Node, parse
from .runtime import Builtin, Compiled, Env, UserFunction, show


#: The special forms of the language, by the name a policy calls them with.
SPECIAL_FORMS: frozenset[str] = frozenset({
    "def", "defun", "let", "if", "with", "and", "or", "defvar", "set", "setq"})

#: The words of the language itself: its special forms and ``nil``.
RESERVED_WORDS: frozenset[str] = SPECIAL_FORMS | {"nil"}


def compile_policy(text: str, policy: str | None = None,
                   warnings: list[PolicyError] | None = None) -> list[Compiled]:
    """Parse and compile a policy text into its top-level closures.

    What fails only when evaluated (see the module's doc) is appended to
    ``warnings`` when a list is given.
    """
    compiler = Compiler(policy)
    try:
        compiled = [compiler.node(n) for n in parse(text)]
    except PolicyError as e:
        raise e.located(policy) if policy is not None else e
    if warnings is not None:
        warnings.extend(compiler.warnings)
    return compiled


def weight(node: Node) -> int:
    """Number of nodes in a tree: the step cost of evaluating it once."""
    if isinstance(node, Atom):
        return 1
    return 1 + sum(weight(n) for n in node.items)


def _const(value: Any) -> Compiled:
    return lambda env: value


class Compiler:
    """Turns the nodes of one named policy into closures."""

    def __init__(self, policy: str | None) -> None:
        self.policy = policy
        #: Errors deferred to evaluation, each with its line.
        self.warnings: list[PolicyError] = []
        self.special: dict[str, Callable[[Form], Compiled]] = {
            "def": self.def_, "defun": self.def_, "let": self.let,
            "if": self.if_, "with": self.with_, "and": self.and_,
            "or": self.or_, "defvar": self.defvar, "set": self.set_,
            "setq": self.set_,
        }
        assert set(self.special) == SPECIAL_FORMS

    # -- atoms ------------------------------------------------------------

    def node(self, node: Node) -> Compiled:
        if isinstance(node, Atom):
            return self.atom(node)
        if node.bracket == "{":
            return self.block([self.node(n) for n in node.items])
        return self.call(node)

    def atom(self, atom: Atom) -> Compiled:
        if atom.kind in ("num", "str"):
            return _const(atom.value)
        if atom.kind == "op":
            raise PolicyError(f"operator {atom.value} used as a value", atom.line)
        return self.symbol(atom.value, atom.line)

    def symbol(self, name: str, line: int) -> Compiled:
        if name == "nil":
            return _const(None)
        base, *attrs = name.split(".")
        if not base or "" in attrs:
            raise PolicyError(f"malformed symbol {name}", line)

        def lookup(env: Env) -> Any:
            stack = env.b.get(base)
            if stack:
                return stack[-1]
            raise PolicyError(f"undefined symbol {base}", line)

        if not attrs:
            return lookup
        if len(attrs) == 1:
            attr = attrs[0]

            def read_one(env: Env) -> Any:
                obj = lookup(env)
                if type(obj) is Entity:
                    try:
                        return obj.latest[attr]
                    except KeyError:
                        pass
                return _attribute(obj, attr, name, line)
            return read_one

        def read_chain(env: Env) -> Any:
            obj = lookup(env)
            for attr in attrs:
                obj = _attribute(obj, attr, name, line)
            return obj
        return read_chain

    def block(self, items: list[Compiled]) -> Compiled:
        if not items:
            return _const(None)
        if len(items) == 1:
            return items[0]
        *init, last = items

        def block(env: Env) -> Any:
            for item in init:
                item(env)
            return last(env)
        return block

    # -- calls ------------------------------------------------------------

    def call(self, form: Form) -> Compiled:
        if not form.items:
            raise PolicyError("empty call", form.line)
        head = form.items[0]
        if not isinstance(head, Atom) or head.kind not in ("sym", "op"):
            return self.deferred_error(
                PolicyError("a call must start with a symbol or an operator", form.line,
                            self.policy))
        if head.kind == "op":
            return self.operator(head.value, form)
        name = head.value
        special = self.special.get(name)
        if special is not None:
            return special(form)
        args = [self.node(n) for n in form.items[1:]]
        if "." in name:
            return self.method_call(name, args, form.line)
        return self.function_call(name, args, form.line)

    def deferred_error(self, error: PolicyError) -> Compiled:
        """A node that raises ``error`` when evaluated, noted as a warning now."""
        self.warnings.append(error)

        def fail(env: Env) -> Any:
            raise PolicyError(error.message, error.line)
        return fail

    def operator(self, symbol: str, form: Form) -> Compiled:
        line = form.line
        if len(form.items) != 3:
            raise PolicyError(
                f"operator {symbol} takes exactly 2 operands, {len(form.items) - 1} given",
                line)
        op = BINARY_OPERATORS[symbol]
        a = self.node(form.items[1])
        b = self.node(form.items[2])

        def apply(env: Env) -> Any:
            x = a(env)
            y = b(env)
            try:
                return op(x, y)
            except ARITHMETIC_ERRORS as e:
                raise operand_error(symbol, x, y, e, line) from None

        if symbol not in SEQUENCE_OPERATORS:
            return apply

        def apply_and_charge(env: Env) -> Any:
            result = apply(env)
            if type(result) is str or type(result) is list:
                env.charge(len(result), line)
            return result
        return apply_and_charge

    def function_call(self, name: str, args: list[Compiled], line: int) -> Compiled:
        # Calls with one or two arguments are most of a policy's calls:
        # evaluating those without building a list through a loop is
        # measurably faster per guest.
        if len(args) == 1:
            (a,) = args

            def evaluate_args(env: Env) -> list:
                return [a(env)]
        elif len(args) == 2:
            a, b = args

            def evaluate_args(env: Env) -> list:
                return [a(env), b(env)]
        else:
            def evaluate_args(env: Env) -> list:
                return [arg(env) for arg in args]

        def call(env: Env) -> Any:
            stack = env.b.get(name)
            if not stack:
                raise PolicyError(f"undefined function {name}", line)
            fn = stack[-1]
            if type(fn) is UserFunction:
                return env.call(fn, evaluate_args(env), line)
            if type(fn) is Builtin:
                return fn.fn(env, evaluate_args(env), line)
            raise PolicyError(f"{name} is not a function", line)
        return call

    def method_call(self, name: str, args: list[Compiled], line: int) -> Compiled:
        base_name, method = name.rsplit(".", 1)
        base = self.symbol(base_name, line)

        def call(env: Env) -> Any:
            obj = base(env)
            values = [a(env) for a in args]
            fn = ENTITY_METHODS.get(method)
            if fn is None or type(obj) is not Entity:
                raise PolicyError(f"{base_name} has no method {method}", line)
            try:
                return fn(env, obj, values, line)
            except PolicyError as e:
                if e.line is None:
                    e.line = line
                raise
        return call

    # -- special forms ------------------------------------------------------

    def def_(self, form: Form) -> Compiled:
        items = form.items
        if len(items) < 4:
            raise PolicyError("def needs a name, a parameter list and a body", form.line)
        name = _plain_symbol(items[1], "def needs a function name")
        if not isinstance(items[2], Form) or items[2].bracket == "{":
            raise PolicyError(f"def {name}: parameters must be a list like (a b)", form.line)
        params = tuple(_plain_symbol(p, f"def {name}: a parameter must be a symbol")
                       for p in items[2].items)
        if len(set(params)) != len(params):
            raise PolicyError(f"def {name}: a parameter is named twice", form.line)
        body_nodes = items[3:]
        fn = UserFunction(name, params, self.block([self.node(n) for n in body_nodes]),
                          sum(weight(n) for n in body_nodes), self.policy)

        def define(env: Env) -> str:
            env.define_global(name, fn)
            return name
        return define

    def let(self, form: Form) -> Compiled:
        items = form.items
        if len(items) < 2 or not isinstance(items[1], Form) or items[1].bracket == "{":
            raise PolicyError("let needs a list of bindings like ((name value) ...)", form.line)
        bindings = []
        for pair in items[1].items:
            if not isinstance(pair, Form) or len(pair.items) != 2:
                raise PolicyError("a let binding must be (name value)", form.line)
            bindings.append((_plain_symbol(pair.items[0], "a let binding must start with a name"),
                             self.node(pair.items[1])))
        body = self.block([self.node(n) for n in items[2:]])

        def let(env: Env) -> Any:
            frame: set[str] = set()
            env.frames.append(frame)
            try:
                for name, value in bindings:
                    v = value(env)
                    if name in frame:
                        env.b[name][-1] = v
                    else:
                        frame.add(name)
                        env.push(name, v)
                return body(env)
            finally:
                env.close_scope()
        return let

    def if_(self, form: Form) -> Compiled:
        if len(form.items) != 4:
            raise PolicyError(f"if takes exactly 3 arguments, {len(form.items) - 1} given",
                              form.line)
        cond, then, other = (self.node(n) for n in form.items[1:])
        return lambda env: then(env) if cond(env) else other(env)

    def with_(self, form: Form) -> Compiled:
        items = form.items
        line = form.line
        if len(items) != 4:
            raise PolicyError(f"with takes a list, an item name and a body, "
                              f"{len(items) - 1} given", line)
        if not isinstance(items[1], Atom) or items[1].kind != "sym":
            raise PolicyError("with needs a symbol naming the list", line)
        list_name = items[1].value
        source = self.symbol(list_name, line)
        item = _plain_symbol(items[2], "with needs a symbol naming the item")
        frame = frozenset((item,))
        body = self.node(items[3])
        cost = weight(items[3])
        policy = self.policy

        def with_(env: Env) -> list:
            seq = source(env)
            if type(seq) is not list:
                raise PolicyError(f"with: {list_name} is {show(seq)}, not a list", line)
            results = []
            for element in seq:
                env.charge(cost, line)
                env.push(item, element)
                env.frames.append(frame)
                try:
                    results.append(body(env))
                except PolicyBudgetError:
                    raise
                except PolicyError as e:
                    # A guest's error costs only that guest its controls.
                    if type(element) is not Entity or element.kind != "guest":
                        raise
                    env.guest_failed(element, e.located(policy) if policy else e)
                    results.append(None)
                finally:
                    env.close_scope()
            return results
        return with_

    def and_(self, form: Form) -> Compiled:
        operands = self._at_least_one(form, "and")

        def and_(env: Env) -> Any:
            value = None
            for operand in operands:
                value = operand(env)
                if not value:
                    return value
            return value
        return and_

    def or_(self, form: Form) -> Compiled:
        operands = self._at_least_one(form, "or")

        def or_(env: Env) -> Any:
            value = None
            for operand in operands:
                value = operand(env)
                if value:
                    return value
            return value
        return or_

    def _at_least_one(self, form: Form, name: str) -> list[Compiled]:
        if len(form.items) < 2:
            raise PolicyError(f"{name} takes at least 1 operand", form.line)
        return [self.node(n) for n in form.items[1:]]

    def defvar(self, form: Form) -> Compiled:
        name, value = self._name_and_value(form, "defvar")

        def defvar(env: Env) -> Any:
            v = value(env)
            frame = env.frames[-1]
            if name in frame:
                return env.b[name][-1]
            if type(frame) is frozenset:
                frame = env.frames[-1] = set(frame)
            frame.add(name)
            env.push(name, v)
            return v
        return defvar

    def set_(self, form: Form) -> Compiled:
        name, value = self._name_and_value(form, "set")
        line = form.line

        def set_(env: Env) -> Any:
            v = value(env)
            stack = env.b.get(name)
            if not stack:
                raise PolicyError(f"set of undefined variable {name}", line)
            stack[-1] = v
            return v
        return set_

    def _name_and_value(self, form: Form, what: str) -> tuple[str, Compiled]:
        if len(form.items) != 3:
            raise PolicyError(f"{what} takes a name and a value, {len(form.items) - 1} given",
                              form.line)
        target = form.items[1]
        if isinstance(target, Atom) and target.kind == "sym" and "." in target.value:
            raise PolicyError(f"{what}: cannot assign through a dot ({target.value})",
                              form.line)
        name = _plain_symbol(target, f"{what} needs a variable name")
        return name, self.node(form.items[2])


def _plain_symbol(node: Node, message: str) -> str:
    if isinstance(node, Atom) and node.kind == "sym" and "." not in node.value:
        return node.value
    line = node.line
    raise PolicyError(message, line)


def _attribute(obj: Any, attr: str, name: str, line: int) -> Any:
    if type(obj) is Entity:
        try:
            return obj.stat(attr)
        except PolicyError as e:
            e.line = line
            raise
    raise PolicyError(f"{name}: {show(obj)} has no attribute {attr}", line)
