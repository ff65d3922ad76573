"""Check a parsed policy and turn it into Python source, once.

Checking happens here (arity of special forms and operators, shapes of
``def``, ``let`` and ``with``), so a policy set that compiles can only fail
on values at run time.  One exception, for MoM's sake: a call whose head is
not a symbol or an operator, such as ``("text")``, fails only when it is
evaluated, as under MoM, whose policies may carry one in a branch never
taken.  It is reported as a warning instead.

The checked tree is kept as a small intermediate form (tuples, see
``Checker``) from which ``codegen`` writes one Python function per
top-level expression and per ``def``.  Which variables may live in Python
locals depends on the whole set (scoping is dynamic: a function of another
policy may read a caller's variable), so the final source is written when
a ``PolicySet`` links its policies (``CompiledPolicy.program``).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from .errors import PolicyError
from .parser import Atom, Form, Node, parse

#: Policies compiled lately, by (text, name): the service checks a text
#: before it builds the set that holds it, a trial set shares its texts
#: with the active one, and Python's compile() of the generated source is
#: the dear part of loading a policy (a code cache keeps that across
#: restarts, see ``codecache``).  A compiled policy only ever adds code
#: written for one more set to itself.
CACHE_SIZE = 16
_cache: dict[tuple[str, str | None], tuple["CompiledPolicy", list[PolicyError]]] = {}
_cache_lock = threading.Lock()  # the bus and the engine's threads both load policies


#: The special forms of the language, by the name a policy calls them with.
SPECIAL_FORMS: frozenset[str] = frozenset({
    "def", "defun", "let", "if", "with", "and", "or", "defvar", "set", "setq"})

#: The words of the language itself: its special forms and ``nil``.
RESERVED_WORDS: frozenset[str] = SPECIAL_FORMS | {"nil"}


def compile_policy(text: str, policy: str | None = None,
                   warnings: list[PolicyError] | None = None) -> "CompiledPolicy":
    """Parse, check and compile a policy text.

    What fails only when evaluated (see the module's doc) is appended to
    ``warnings`` when a list is given.
    """
    key = (text, policy)
    with _cache_lock:
        cached = _cache.pop(key, None)
    if cached is None:
        from .codegen import CompiledPolicy  # codegen imports this module
        checker = Checker(policy)
        try:
            tree = [checker.node(n) for n in parse(text)]
            cached = CompiledPolicy(policy, tree, text, checker.def_nodes), checker.warnings
        except PolicyError as e:
            raise e.located(policy) if policy is not None else e
    with _cache_lock:
        if len(_cache) >= CACHE_SIZE:
            del _cache[next(iter(_cache))]  # the least recently used
        _cache[key] = cached
    compiled, deferred = cached
    if warnings is not None:
        warnings.extend(deferred)
    return compiled


def forget_compiled_policies() -> None:
    """Empty the in-memory cache of ``compile_policy`` (what a restart does)."""
    with _cache_lock:
        _cache.clear()


def weight(node: Node) -> int:
    """Number of nodes in a tree: the step cost of evaluating it once."""
    if type(node) is Atom:
        return 1
    # Kept on the form: a def or with body inside another is weighed again.
    size = node.size
    if size is None:
        size = node.size = 1 + sum([1 if type(n) is Atom else weight(n) for n in node.items])
    return size


# The intermediate form the checker builds is described in ``ir``.
NIL = ("const", None)




class Checker:
    """Checks the nodes of one named policy and builds their intermediate form."""

    def __init__(self, policy: str | None) -> None:
        self.policy = policy
        #: Errors deferred to evaluation, each with its line.
        self.warnings: list[PolicyError] = []
        #: The defs of the text, nested ones included, in order.
        self.def_nodes: list[tuple] = []
        self.special: dict[str, Callable[[Form], tuple]] = {
            "def": self.def_, "defun": self.def_, "let": self.let,
            "if": self.if_, "with": self.with_, "and": self.and_,
            "or": self.or_, "defvar": self.defvar, "set": self.set_,
            "setq": self.set_,
        }
        assert set(self.special) == SPECIAL_FORMS

    def node(self, node: Node) -> tuple:
        if type(node) is Atom:
            # A plain symbol, the commonest node, without a call of atom().
            if node.kind == "sym" and "." not in node.value and node.value != "nil":
                return ("ref", node.value, (), node.value, node.line)
            return self.atom(node)
        if node.bracket == "{":
            return self.block([self.node(n) for n in node.items])
        return self.call(node)

    def atom(self, atom: Atom) -> tuple:
        if atom.kind in ("num", "str"):
            return ("const", atom.value)
        if atom.kind == "op":
            raise PolicyError(f"operator {atom.value} used as a value", atom.line)
        return self.symbol(atom.value, atom.line)

    def symbol(self, name: str, line: int) -> tuple:
        if name == "nil":
            return NIL
        base, *attrs = name.split(".")
        if not base or "" in attrs:
            raise PolicyError(f"malformed symbol {name}", line)
        return ("ref", base, tuple(attrs), name, line)

    @staticmethod
    def block(items: list[tuple]) -> tuple:
        if not items:
            return NIL
        if len(items) == 1:
            return items[0]
        return ("block", items)

    def call(self, form: Form) -> tuple:
        if not form.items:
            raise PolicyError("empty call", form.line)
        head = form.items[0]
        if type(head) is not Atom or head.kind not in ("sym", "op"):
            error = PolicyError("a call must start with a symbol or an operator", form.line,
                                self.policy)
            self.warnings.append(error)
            return ("fail", error.message, error.line)
        if head.kind == "op":
            return self.operator(head.value, form)
        name = head.value
        special = self.special.get(name)
        if special is not None:
            return special(form)
        args = [self.node(n) for n in form.items[1:]]
        if "." in name:
            base_name, method = name.rsplit(".", 1)
            base = self.symbol(base_name, form.line)
            return ("mcall", base, base_name, method, args, form.line)
        return ("call", name, args, form.line)

    def operator(self, symbol: str, form: Form) -> tuple:
        if len(form.items) != 3:
            raise PolicyError(
                f"operator {symbol} takes exactly 2 operands, {len(form.items) - 1} given",
                form.line)
        return ("op", symbol, self.node(form.items[1]), self.node(form.items[2]), form.line)

    def def_(self, form: Form) -> tuple:
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
        body = self.block([self.node(n) for n in body_nodes])
        cost = sum(weight(n) for n in body_nodes)
        node = ("def", name, params, body, cost, len(self.def_nodes))
        self.def_nodes.append(node)
        return node

    def let(self, form: Form) -> tuple:
        items = form.items
        if len(items) < 2 or not isinstance(items[1], Form) or items[1].bracket == "{":
            raise PolicyError("let needs a list of bindings like ((name value) ...)", form.line)
        bindings = []
        for pair in items[1].items:
            if not isinstance(pair, Form) or len(pair.items) != 2:
                raise PolicyError("a let binding must be (name value)", form.line)
            bindings.append((_plain_symbol(pair.items[0], "a let binding must start with a name"),
                             self.node(pair.items[1])))
        return ("let", bindings, self.block([self.node(n) for n in items[2:]]))

    def if_(self, form: Form) -> tuple:
        if len(form.items) != 4:
            raise PolicyError(f"if takes exactly 3 arguments, {len(form.items) - 1} given",
                              form.line)
        cond, then, other = (self.node(n) for n in form.items[1:])
        return ("if", cond, then, other)

    def with_(self, form: Form) -> tuple:
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
        body = self.node(items[3])
        return ("with", source, list_name, item, body, weight(items[3]), line)

    def and_(self, form: Form) -> tuple:
        return ("and", self._at_least_one(form, "and"))

    def or_(self, form: Form) -> tuple:
        return ("or", self._at_least_one(form, "or"))

    def _at_least_one(self, form: Form, name: str) -> list[tuple]:
        if len(form.items) < 2:
            raise PolicyError(f"{name} takes at least 1 operand", form.line)
        return [self.node(n) for n in form.items[1:]]

    def defvar(self, form: Form) -> tuple:
        name, value = self._name_and_value(form, "defvar")
        return ("defvar", name, value)

    def set_(self, form: Form) -> tuple:
        name, value = self._name_and_value(form, "set")
        return ("set", name, value, form.line)

    def _name_and_value(self, form: Form, what: str) -> tuple[str, Any]:
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
    raise PolicyError(message, node.line)
