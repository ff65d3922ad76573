"""Write a checked policy as Python source and compile it, once per set.

Each top-level expression becomes a function ``t<N>(E)`` and each ``def``
a function ``u<N>(E, L, *args)`` (``L`` is the caller's line); the set
calls them with a fresh ``Env`` per evaluation.  The code keeps the
language's semantics (policy-language.md) with far less interpretation:

* Dynamic scoping.  A variable lives in a Python local when no function of
  the set could see it: a name is *free* in a function body when a
  reference to it (read, ``set``, call head, dotted base) is not resolved
  by a binding the body makes itself on every path to it.  Free names
  live in ``E.b`` wherever they are bound, as before; every other
  ``let``, parameter, ``with`` item and ``defvar`` below the global scope
  is a local.  A local that a ``defvar`` may or may not have bound yet
  holds ``UNBOUND`` until it runs, and a reference then falls back to the
  next binding outwards, as the scope stack would.
* Statements, not nested expressions: every intermediate value goes to a
  temporary, so deep expressions cost no Python nesting; ``if``, ``let``
  and ``with`` nest blocks, and code nested deeper than Python allows
  moves into a closure defined at the top of its function.
* Errors are raised with the message and line the language defines, from
  exception handlers that cost nothing when nothing fails.
* What cannot have changed is not looked up.  A built-in that no binding
  form of the set names (max, min, abs, not, valid) is written in place; a
  def made once at the top level, whose name nothing else in the set binds,
  is called directly (or inlined) from the next top-level expression on.
  Each policy's code therefore depends on the names the set's other
  policies bind, as it does on the set's free names.
* A function that calls no user function (a leaf) cannot nest deeper: its
  calls are not counted toward the depth bound.
"""

from __future__ import annotations

import math
import re
from typing import Any

from .builtins import ENTITY_METHODS
from .codecache import (CodeCache, cache_key, dump_analysis, dump_program, load_analysis,
                        load_program)
from .ir import walk
from .runtime import UserFunction
from .support import NAMESPACE

# Deeper than this (indentation, nested try/for blocks) the rest of a
# function's code moves into a closure: Python refuses 100 indentation
# levels and 20 nested blocks.
MAX_INDENT = 40
MAX_BLOCKS = 10


_INLINE_BUILTINS = frozenset({"max", "min", "abs", "not", "valid"})
#: A call of a def of the same policy whose body weighs at most this is
#: written out in place, behind a test that the name still means that def
#: (a Python call and the argument passing cost as much as a small body).
INLINE_MAX_WEIGHT = 80
#: Inlined bodies inlining others, at most this deep.
INLINE_MAX_DEPTH = 2
#: Only calls inside a ``with`` body are inlined (they run once per item),
#: at most this many body nodes per policy: inlining grows the source, and
#: Python's compile() of the source is most of the time it takes to load.
INLINE_BUDGET = 300
_COMPARISONS = frozenset({"<", ">", "<=", ">=", "==", "!="})
#: Entity methods whose value is their second argument (on every path).
_YIELDS_VALUE = frozenset({"Control", "SetVar"})
_IDENT = re.compile(r"[^A-Za-z0-9_]")
#: A Python local the code writes: a temporary or a variable.
_LOCAL = re.compile(r"[tv][0-9]+(_[A-Za-z0-9_]*)?")
_TEMP = re.compile(r"t[0-9]+")


# -- analysis ---------------------------------------------------------------

def _defvars(ir: tuple, out: set[str]) -> None:
    """Names a ``defvar`` may bind in the scope whose code ``ir`` is (not
    looking into the scopes that ``let``, ``with`` and ``def`` open)."""
    kind = ir[0]
    if kind == "defvar":
        out.add(ir[1])
        _defvars(ir[2], out)
    elif kind == "block" or kind == "and" or kind == "or":
        for item in ir[1]:
            _defvars(item, out)
    elif kind == "if":
        _defvars(ir[1], out)
        _defvars(ir[2], out)
        _defvars(ir[3], out)
    elif kind == "op":
        _defvars(ir[2], out)
        _defvars(ir[3], out)
    elif kind == "call":
        for item in ir[2]:
            _defvars(item, out)
    elif kind == "mcall":
        for item in ir[4]:
            _defvars(item, out)
    elif kind == "set":
        _defvars(ir[2], out)


def bound_names(tree: Any, *, defs: bool = True) -> set[str]:
    """Every name a binding form of ``tree`` may bind: def names (unless
    not ``defs``) and parameters, let and with names, defvar and set
    targets."""
    names: set[str] = set()
    for node in walk(tree):
        kind = node[0]
        if kind == "def":
            if defs:
                names.add(node[1])
            names.update(node[2])
        elif kind == "let":
            names.update(name for name, _ in node[1])
        elif kind == "with":
            names.add(node[3])
        elif kind == "defvar" or kind == "set":
            names.add(node[1])
    return names


def _set_targets(ir: Any) -> set[str]:
    """The names the ``set`` forms of ``ir`` assign."""
    return {node[1] for node in walk(ir) if node[0] == "set"}


class Scope:
    """One scope of the code being written: what it binds, and how."""

    __slots__ = ("kind", "vars", "definite", "maybe", "frame", "pushed", "assigned",
                 "inits", "needs_init")

    def __init__(self, kind: str) -> None:
        self.kind = kind              # "global", "func", "let" or "with"
        self.vars: dict[str, str] = {}    # local bindings: name -> Python name
        self.definite: set[str] = set()   # names bound here on every path so far
        self.maybe: set[str] = set()      # names a defvar may bind here
        self.frame: str | None = None     # Python name of the set of dynamic defvars
        self.pushed: list[str] = []       # dynamic names pushed statically
        self.assigned: set[str] = set()   # names a defvar of the code so far may have bound
        #: Where each local defvar name is set to UNBOUND, and the names
        #: some code tests for UNBOUND (the other lines are dropped).
        self.inits: dict[str, tuple[list[str], int]] = {}
        self.needs_init: set[str] = set()

    def close(self) -> None:
        """Drop the UNBOUND initialisations no code tests."""
        for name, (lines, index) in self.inits.items():
            if name not in self.needs_init:
                lines[index] = ""


class Unit:
    """The Python function being written for one expression or def body."""

    def __init__(self, pyname: str, is_function: bool) -> None:
        self.pyname = pyname
        self.is_function = is_function
        self.lines: list[str] = []
        self.indent = 1
        self.blocks = 0
        self.chunks: list[list[str]] = []
        self.scope_vars: set[str] = set()
        self.touched: set[str] | None = None  # scope vars a closure being written uses
        #: Names a ``set`` of this unit's code assigns.
        self.set_names: set[str] = set()
        #: A def body that calls no user function (see Generator.enter).
        self.leaf = False


class Generator:
    """Writes the Python source of one policy, given the set's free names."""

    def __init__(self, policy: str | None, free: frozenset[str],
                 others: frozenset[str] = frozenset()) -> None:
        self.policy = policy
        self.dynamic = free
        #: Names the binding forms of the set's other policies may bind.
        self.others = others
        #: The built-ins written in place without looking them up: those
        #: no binding form of the set names, so their binding is always
        #: the built-in (set in prepare).
        self.fixed: frozenset[str] = _INLINE_BUILTINS - others
        #: Defs called without a lookup, by name: (top-level position, def)
        #: of each def made once, at the top level, whose name nothing else
        #: in the set binds.  From the next top-level expression on, that
        #: name can only mean that def.
        self.direct: dict[str, tuple[int, tuple]] = {}
        #: Position of the top-level expression being written.
        self.position = 0
        self.counter = 0
        self.consts: dict[str, Any] = {}
        self.functions: list[str] = []
        self.user_functions: dict[str, UserFunction] = {}
        #: Names referenced freely by the def bodies written.
        self.free: set[str] = set()
        #: Names bound in locals (a policy binding a name that turns out
        #: free must be written again).
        self.local_names: set[str] = set()
        #: The policy name of each Python variable written.
        self.py_names: dict[str, str] = {}
        self.unit: Unit = Unit("", False)
        self.scopes: list[Scope] = []
        #: The defs of the policy by name, and each def's UserFunction by index.
        self.defs: dict[str, list[tuple]] = {}
        self.runs: dict[str, str] = {}
        self.inlining: list[str] = []
        self.inline_budget = INLINE_BUDGET
        self.loops = 0   # enclosing with bodies, inlined calls included

    def prepare(self, tree: list[tuple], defs: list[tuple]) -> None:
        """Make the UserFunction of every def first: a call may be written
        (and inlined) before the def it calls.  ``defs``: the def nodes of
        the policy (``Checker.def_nodes``), ``tree`` its top-level nodes."""
        self.fixed = self.fixed - bound_names(tree)
        self.direct = direct_defs(tree, defs, self.others)
        for node in defs:
            _, name, params, _body, cost, index = node
            key = f"D{index}"
            fn = UserFunction(name, params, cost, self.policy)
            self.user_functions[key] = fn
            self.consts[key] = fn
            self.defs.setdefault(name, []).append(node)

    # -- writing lines -------------------------------------------------------

    def emit(self, line: str) -> None:
        self.unit.lines.append("    " * self.unit.indent + line)

    def temp(self) -> str:
        self.counter += 1
        return f"t{self.counter}"

    def var(self, name: str) -> str:
        self.counter += 1
        py = f"v{self.counter}_{_IDENT.sub('_', name)[:24]}"
        self.unit.scope_vars.add(py)
        self.py_names[py] = name
        return py

    def use(self, py: str) -> str:
        touched = self.unit.touched
        # A temporary standing for a binding (see bind) is only read: a
        # closure needs no nonlocal for it.
        if touched is not None and py in self.unit.scope_vars:
            touched.add(py)
        return py

    def const(self, value: Any) -> str:
        if value is None:
            return "None"
        if type(value) is str or (type(value) is int and value.bit_length() < 64) or \
                (type(value) is float and math.isfinite(value) and float(repr(value)) == value):
            return repr(value)
        self.counter += 1
        key = f"k{self.counter}"
        self.consts[key] = value
        return key

    def stable(self, expr: str) -> str:
        """A value that a later ``set`` of the same unit cannot change."""
        if expr in self.unit.scope_vars and self.py_names[expr] in self.unit.set_names:
            t = self.temp()
            self.emit(f"{t} = {expr}")
            return t
        return expr

    def bind(self, scope: Scope, name: str, value: str, body: tuple | None = None) -> None:
        """Bind ``name`` in a scope just opened (parameter, item of with);
        a local that ``body`` (the scope's code) never sets is the Python
        name holding ``value`` (nothing else runs until the scope closes)."""
        if name in self.dynamic:
            self.emit(f"B[{name!r}].append({value})")
            scope.pushed.append(name)
        elif body is not None and _LOCAL.fullmatch(value) and name not in _set_targets(body):
            scope.vars[name] = value
            self.local_names.add(name)
        else:
            py = scope.vars[name] = self.var(name)
            self.local_names.add(name)
            self.emit(f"{self.use(py)} = {value}")
        scope.definite.add(name)

    def charge(self, cost: int, line: str) -> None:
        self.emit(f"E.steps -= {cost}")
        self.emit(f"if E.steps < 0: raise _BE('evaluation exceeded its step budget', {line})")

    def call_handlers(self, name: str, line: str, scope: Scope, leaf: bool) -> list[str]:
        """The handlers closing a call's try block: errors name the policy,
        Python's stack running out is a limit error, the scope is popped."""
        located = f"e.located({self.policy!r})" if self.policy is not None else "e"
        lines = ["except _PE as e:", f"    raise {located}",
                 "except RecursionError:",
                 f"    raise _LE({_py_str('calls nested too deeply in function ' + name)}, "
                 f"{line}, {self.policy!r}) from None"]
        finally_ = [] if leaf else ["    E.depth -= 1"]
        finally_ += [f"    B[{p!r}].pop()" for p in scope.pushed]
        if scope.frame:
            finally_.append(f"    for n in {self.use(scope.frame)}: B[n].pop()")
        return lines + (["finally:"] + finally_ if finally_ else [])

    def enter(self, name: str, line: str, body: tuple) -> bool:
        """Write the depth test and count of a call of def ``name`` unless
        its body calls no user function (a leaf: it cannot nest deeper, so
        the bound on depth holds, one call beyond it at most); whether it
        is a leaf."""
        leaf = self.is_leaf(body)
        if not leaf:
            self.emit(f"if E.depth >= E.max_depth: raise _deptherr(E, {name!r}, {line})")
            self.emit("E.depth += 1")
        return leaf

    def is_leaf(self, body: Any) -> bool:
        return not any(node[0] == "call" and node[1] not in self.fixed for node in walk(body))

    # -- units ---------------------------------------------------------------

    def top_level(self, ir: tuple) -> str:
        """Write the next top-level expression of the policy (they are
        written in order: ``position`` counts them)."""
        self.counter += 1
        unit = Unit(f"t{self.counter}", False)
        scope = Scope("global")
        try:
            return self.write_unit(unit, [scope], ir, "(E)", [])
        finally:
            self.position += 1

    def function(self, name: str, params: tuple[str, ...], body: tuple, cost: int) -> str:
        self.counter += 1
        unit = Unit(f"u{self.counter}", True)
        self.unit = unit
        scope = Scope("func")
        args = []
        dynamic_params = []
        for p in params:
            if p in self.dynamic:
                arg = f"a{len(args)}"
                dynamic_params.append((p, arg))
                scope.pushed.append(p)
            else:
                arg = self.var(p)
                scope.vars[p] = arg
                self.local_names.add(p)
            scope.definite.add(p)
            args.append(arg)
        header = ["E.steps -= %d" % cost,
                  "if E.steps < 0: raise _BE('evaluation exceeded its step budget', L)"]
        unit.leaf = self.is_leaf(body)
        if not unit.leaf:
            header += [f"if E.depth >= E.max_depth: raise _deptherr(E, {name!r}, L)",
                       "E.depth += 1"]
        header += [f"B[{p!r}].append({a})" for p, a in dynamic_params]
        signature = "(E, L" + "".join(", " + a for a in args) + ")"
        return self.write_unit(unit, [scope], body, signature, header, name)

    def write_unit(self, unit: Unit, scopes: list[Scope], ir: tuple, signature: str,
                   header: list[str], function: str | None = None) -> str:
        saved = self.unit, self.scopes
        self.unit, self.scopes = unit, scopes
        unit.set_names = _set_targets(ir)
        scope = scopes[0]
        try:
            if function is None:
                self.open_scope(scope, ir, unit.indent)
                result = self.gen(ir)
                self.emit(f"return {result}")
                body = unit.lines
            else:
                unit.indent = 2
                unit.blocks = 1
                self.open_scope(scope, ir, 2)
                result = self.gen(ir)
                self.emit(f"return {result}")
                scope.close()
                body = ["    B = E.b"] + ["    " + h for h in header] + ["    try:"] + unit.lines
                body += ["    " + h for h in self.call_handlers(function, "L", scope, unit.leaf)]
            if function is None:
                body = ["    B = E.b"] + body
            if unit.chunks:
                # Closures assign the scope variables: they must exist here.
                names = sorted(unit.scope_vars - set(_params(signature)))
                pre = [f"    {' = '.join(names)} = None"] if names else []
                pre += [line for chunk in unit.chunks for line in chunk]
                at = 1 if function is None else len(header) + 1
                body = body[:at] + pre + body[at:]
            if not any("B[" in line for line in body):
                body.remove("    B = E.b")
            self.functions.append(f"def {unit.pyname}{signature}:\n" + "\n".join(body))
        finally:
            self.unit, self.scopes = saved
        return unit.pyname

    def open_scope(self, scope: Scope, code: Any, indent: int) -> None:
        """Declare what a scope's defvars may bind; set its locals to UNBOUND."""
        maybe: set[str] = set()
        if type(code) is list:
            for item in code:
                _defvars(item, maybe)
        else:
            _defvars(code, maybe)
        scope.maybe = maybe
        if scope.kind == "global":
            return
        for name in sorted(maybe):
            if name in self.dynamic:
                if scope.frame is None:
                    scope.frame = self.var("frame")
                    self.emit(f"{self.use(scope.frame)} = set()")
            elif name not in scope.vars:
                scope.vars[name] = py = self.var(name)
                self.local_names.add(name)
                scope.inits[name] = (self.unit.lines, len(self.unit.lines))
                self.emit(f"{self.use(py)} = _UNB")

    # -- references ----------------------------------------------------------

    def lookup_steps(self, name: str) -> tuple[list[tuple[bool, str]], bool]:
        """The local bindings a reference to ``name`` may find, innermost
        first (definite?, Python name), and whether one surely binds it."""
        steps: list[tuple[bool, str]] = []
        if name not in self.dynamic:
            for scope in reversed(self.scopes):
                if scope.kind == "global":
                    break
                if name in scope.definite:
                    steps.append((True, scope.vars[name]))
                    return steps, True
                if name in scope.maybe:
                    steps.append((False, scope.vars[name]))
                    scope.needs_init.add(name)
        if self.unit.is_function:
            self.free.add(name)
        return steps, False

    def read(self, name: str, line: int, what: str = "symbol") -> str:
        steps, sure = self.lookup_steps(name)
        if sure and len(steps) == 1:
            return self.use(steps[0][1])
        t = self.temp()
        depth = 0
        for definite, py in steps:
            self.emit(f"{t} = {self.use(py)}")
            if definite:
                break
            self.emit(f"if {t} is _UNB:")
            self.unit.indent += 1
            depth += 1
        if not sure:
            self.emit(f"try: {t} = B[{name!r}][-1]")
            self.emit(f"except IndexError: raise _PE({_py_str(f'undefined {what} {name}')}, "
                      f"{line}) from None")
        self.unit.indent -= depth
        return t

    def ref(self, ir: tuple) -> str:
        _, base, attrs, full, line = ir
        obj = self.read(base, line)
        if not attrs:
            return obj
        t = self.temp()
        if len(attrs) == 1:
            # get(), not [...]: an optional statistic the sample lacks (nil)
            # is common, and an exception per read costs more than the read.
            self.emit(f"try: {t} = {obj}.latest.get({attrs[0]!r}, _MISS)")
            self.emit(f"except AttributeError: {t} = _MISS")
            self.emit(f"if {t} is _MISS: {t} = None if type({obj}) is _Ent and "
                      f"{attrs[0]!r} in {obj}.schema.known else "
                      f"_attr({obj}, {attrs[0]!r}, {full!r}, {line})")
            return t
        self.emit(f"{t} = {obj}")
        for attr in attrs:
            self.emit(f"{t} = _attr({t}, {attr!r}, {full!r}, {line})")
        return t

    # -- nodes ---------------------------------------------------------------

    def gen(self, ir: tuple) -> str:
        kind = ir[0]
        if kind == "const":
            return self.const(ir[1])
        if kind == "ref":
            return self.ref(ir)
        if kind == "op":
            return self.op(ir)
        if kind == "call":
            return self.call(ir)
        if kind == "mcall":
            return self.mcall(ir)
        if kind == "block":
            result = "None"
            for item in ir[1]:
                result = self.gen(item)
            return result
        if kind == "defvar":
            return self.defvar(ir)
        if kind == "set":
            return self.set_(ir)
        if kind == "def":
            return self.def_(ir)
        if kind == "fail":
            self.emit(f"raise _PE({ir[1]!r}, {ir[2]})")
            return "None"
        # The forms that nest Python blocks.
        unit = self.unit
        if unit.indent > MAX_INDENT or unit.blocks > MAX_BLOCKS:
            return self.closure(ir)
        if kind == "if":
            return self.if_(ir)
        if kind == "and" or kind == "or":
            return self.and_or(ir)
        if kind == "let":
            return self.let(ir)
        return self.with_(ir)

    def closure(self, ir: tuple) -> str:
        unit = self.unit
        saved = unit.lines, unit.indent, unit.blocks, unit.touched
        unit.lines, unit.indent, unit.blocks, unit.touched = [], 2, 0, set()
        self.counter += 1
        name = f"c{self.counter}"
        try:
            result = self.gen(ir)
            self.emit(f"return {result}")
            touched = unit.touched
            lines = unit.lines
        finally:
            unit.lines, unit.indent, unit.blocks, unit.touched = saved
        if unit.touched is not None:
            unit.touched |= touched
        head = [f"    def {name}():"]
        if touched:
            head.append(f"        nonlocal {', '.join(sorted(touched))}")
        unit.chunks.append(head + lines)
        t = self.temp()
        self.emit(f"{t} = {name}()")
        return t

    def op(self, ir: tuple) -> str:
        _, symbol, a, b, line = ir
        x = self.stable(self.gen(a))
        y = self.gen(b)
        t = self.temp()
        if symbol in _COMPARISONS or symbol == "/" or symbol == ">>":
            self.emit(f"try: {t} = {x} {symbol} {y}")
            self.emit(f"except _AE as e: raise _operr({symbol!r}, {x}, {y}, e, {line}) "
                      f"from None")
        elif symbol == "+" or symbol == "-":
            self.emit(f"try: {t} = {x} {symbol} {y}")
            self.emit(f"except _AE as e: raise _operr({symbol!r}, {x}, {y}, e, {line}) "
                      f"from None")
            self.cap(symbol, x, y, t, line)
        elif symbol == "*":
            self.emit(f"if type({x}) is float or type({y}) is float:")
            self.emit(f"    try: {t} = {x} * {y}")
            self.emit(f"    except _AE as e: raise _operr('*', {x}, {y}, e, {line}) from None")
            # Two ints: the product of two capped ints is small enough to
            # make before capping it (a repeated string is not).
            self.emit(f"elif type({x}) is int and type({y}) is int:")
            self.emit(f"    {t} = {x} * {y}")
            self.unit.indent += 1
            self.cap("*", x, y, t, line)
            self.unit.indent -= 1
            self.emit(f"else: {t} = _binary(E, '*', {x}, {y}, {line})")
        else:
            self.emit(f"{t} = _binary(E, {symbol!r}, {x}, {y}, {line})")
        return t

    def direct_call(self, ir: tuple, args: list[tuple], line: int) -> str:
        """A call of a def that nothing can have replaced by now: inlined or
        a plain Python call, neither looked up nor tested."""
        _, name, params, _body, _cost, index = ir
        if self.unit.is_function:
            self.free.add(name)  # what a binding of it elsewhere must know
        values = [self.stable(self.gen(a)) for a in args]
        n = len(values)
        t = self.temp()
        if n != len(params):
            self.emit(f"raise _nargs(D{index}, {n}, {line})")
            self.emit(f"{t} = None")
            return t
        target = self.inline_target(name, n)
        if target is not None:
            return self.inline(target, f"D{index}", values, None, line)
        self.emit(f"{t} = {self.runs[f'D{index}']}(E, {line}{''.join(', ' + v for v in values)})")
        return t

    def cap(self, symbol: str, x: str, y: str, t: str, line: int) -> None:
        """Bound the result ``t``: a number past the int limit (a float
        there or nan is returned as it is), a string or a list (which do
        not compare with a number) by _capped."""
        capped = f"{t} = _capped(E, {symbol!r}, {x}, {y}, {t}, {line})"
        self.emit("try:")
        self.emit(f"    if not _NH < {t} < _H: {capped}")
        self.emit(f"except TypeError: {capped}")

    def call(self, ir: tuple) -> str:
        _, name, args, line = ir
        if name in self.fixed:
            if self.unit.is_function:
                self.free.add(name)  # what a binding of it elsewhere must know
            values = [self.stable(self.gen(a)) for a in args]
            t = self.temp()
            inline = self.inline_builtin(name, values, t, line)
            if inline is not None:
                for code in inline:
                    self.emit(code)
                return t
            self.emit(f"{t} = _B_{name}.fn(E, [{', '.join(values)}], {line})")
            return t
        direct = self.direct.get(name)
        if direct is not None and direct[0] < self.position:
            return self.direct_call(direct[1], args, line)
        f = self.stable(self.read(name, line, "function"))
        not_a_function = f"raise _PE({_py_str(name + ' is not a function')}, {line})"
        check = len(self.unit.lines)
        fast = f"{f} is not _B_{name} and " if name in _INLINE_BUILTINS else ""
        self.emit(f"if {fast}type({f}) is not _UF and type({f}) is not _BI: {not_a_function}")
        values = [self.stable(self.gen(a)) for a in args]
        pure = len(self.unit.lines) == check + 1
        if pure:
            # Nothing is evaluated between the lookup and the call: the
            # check can go with the dispatch below.
            del self.unit.lines[check]
        n = len(values)
        listed = ", ".join(values)
        t = self.temp()
        els = ""
        if name in _INLINE_BUILTINS:
            inline = self.inline_builtin(name, values, t, line)
            if inline is not None:
                self.emit(f"if {f} is _B_{name}:")
                for code in inline:
                    self.emit("    " + code)
                els = "el"
        target = self.inline_target(name, n)
        if target is not None:
            self.emit(f"{els}if {f} is D{target[5]}:")
            self.unit.indent += 1
            self.inline(target, f, values, t, line)
            self.unit.indent -= 1
            els = "el"
        self.emit(f"{els}if type({f}) is _UF:")
        self.emit(f"    if {f}.nparams != {n}: raise _nargs({f}, {n}, {line})")
        self.emit(f"    {t} = {f}.run(E, {line}{''.join(', ' + v for v in values)})")
        if pure:
            self.emit(f"elif type({f}) is _BI: {t} = {f}.fn(E, [{listed}], {line})")
            self.emit(f"else: {not_a_function}")
        else:
            self.emit(f"else: {t} = {f}.fn(E, [{listed}], {line})")
        return t

    @staticmethod
    def inline_builtin(name: str, values: list[str], t: str, line: int) -> list[str] | None:
        n = len(values)
        listed = ", ".join(values)
        if name in ("max", "min"):
            if n == 0:
                return None
            # What Python's max and min do, without the call: each operand
            # replaces the one kept if it compares greater (less).
            sign = ">" if name == "max" else "<"
            lines = [f"{t} = {values[0]}"]
            if n > 1:
                lines.append("try:")
                lines += [f"    if {v} {sign} {t}: {t} = {v}" for v in values[1:]]
                lines.append(f"except TypeError: raise _cmp({name!r}, [{listed}], {line}) "
                             f"from None")
            return lines
        if name == "abs" and n == 1:
            return [f"try: {t} = abs({listed})",
                    f"except TypeError: raise _abserr({listed}, {line}) from None"]
        if name == "not" and n == 1:
            return [f"{t} = not {listed}"]
        if name == "valid":
            # A literal operand is decided here (comparing one with "is"
            # draws a SyntaxWarning).
            if "None" in values:
                return [f"{t} = False"]
            tests = [f"{v} is not None" for v in values if v.isidentifier()]
            return [f"{t} = " + (" and ".join(tests) if tests else "True")]
        return None

    def mcall(self, ir: tuple) -> str:
        _, base, base_name, method, args, line = ir
        obj = self.stable(self.gen(base))
        values = [self.stable(self.gen(a)) for a in args]
        n = len(values)
        no_method = _py_str(f"{base_name} has no method {method}")
        if method not in ENTITY_METHODS:
            # Not an entity's: a record's setter (tune.setTotalBytesSec), or an error.
            t = self.temp()
            self.emit(f"{t} = _rmethod(E, {obj}, {base_name!r}, {method!r}, "
                      f"[{', '.join(values)}], {line})")
            return t
        t = self.temp()
        generic = f"{t} = _method(E, {obj}, {method!r}, [{', '.join(values)}], {line})"
        fast = self.method_fast_path(method, obj, values, t, line, no_method) if values else None
        if fast is None or not fast[1]:
            # The fast path (if any) does not itself tell an entity apart.
            self.emit(f"if type({obj}) is not _Ent: raise _PE({no_method}, {line})")
        if fast is None:
            self.emit(generic)
        elif args[0][0] == "const" and type(args[0][1]) is str:
            for code in fast[0]:
                self.emit(code)
        else:
            # A name computed at run time: the generic path reports a bad one.
            self.emit(f"if type({values[0]}) is str:")
            for code in fast[0]:
                self.emit("    " + code)
            if fast[1]:
                self.emit(f"elif type({obj}) is not _Ent: raise _PE({no_method}, {line})")
            self.emit(f"else: {generic}")
        if method == "Control" and values:
            # Where the value came from, for "why did my guest shrink?": the
            # last call wins, as for the value.  Reached only when the call
            # succeeded, so the name is a string.
            # By name, then entity: no tuple made per call (a thousand of
            # them per evaluation would cost more than the rest of this).
            self.emit(f"E.origins[{values[0]}][{obj}] = {self.const((self.policy, line))}")
        if fast is not None and method in _YIELDS_VALUE:
            return values[1]  # what both paths yield, without a copy
        return t

    @staticmethod
    def method_fast_path(method: str, obj: str, values: list[str], t: str, line: int,
                         no_method: str) -> tuple[list[str], bool] | None:
        """Lines doing what ENTITY_METHODS[method] does for a name string ``k``,
        and whether they raise ``no_method`` themselves for an ``obj`` that is
        not an entity (by what only an entity has: no test on the way)."""
        n = len(values)
        k = values[0]
        not_entity = f"raise _PE({no_method}, {line}) from None"
        # A record has ``latest`` too: Stat tests first.
        if method == "Stat" and n == 1:
            return [f"{t} = {obj}.latest.get({k}, _MISS)",
                    f"if {t} is _MISS: {t} = _attr({obj}, {k}, '', {line})"], False
        if method == "StatAvg" and n == 1:
            return [f"try: {t} = {obj}._averages[{k}]",
                    f"except KeyError: {t} = _savg({obj}, {k}, {line})",
                    f"except AttributeError: {not_entity}"], True
        # Only entities are keys of E.controls (an unhashable value is no key).
        if method == "Control" and n == 2:
            return [f"try: {t} = E.controls.get({obj})",
                    f"except TypeError: {not_entity}",
                    f"if {t} is None:",
                    f"    if type({obj}) is not _Ent: {not_entity}",
                    f"    {t} = E.controls[{obj}] = {{}}",
                    f"{t}[{k}] = {values[1]}"], True
        if method in ("GetVar", "SetVar") and n == (1 if method == "GetVar" else 2):
            # Kept on the entity, or (a trial) in E.variables by the generic path.
            if method == "GetVar":
                direct = f"{t} = {obj}.variables.get({k})"
                generic = f"{t} = _method(E, {obj}, 'GetVar', [{k}], {line})"
            else:
                direct = f"{obj}.variables[{k}] = {values[1]}"
                generic = f"_method(E, {obj}, 'SetVar', [{k}, {values[1]}], {line})"
            return [f"if E.variables is None:",
                    f"    try: {direct}",
                    f"    except AttributeError: {not_entity}",
                    f"elif type({obj}) is not _Ent: {not_entity}",
                    f"else: {generic}"], True
        if method == "GetControl" and n == 1:
            return [f"{t} = E.controls.get({obj}, _NOC).get({k})"], False
        return None

    def def_(self, ir: tuple) -> str:
        _, name, params, body, cost, index = ir
        saved_unit = self.unit
        key = f"D{index}"
        loops, self.loops = self.loops, 0
        self.runs[key] = self.function(name, params, body, cost)
        self.unit, self.loops = saved_unit, loops
        self.emit(f"E.define_global({name!r}, {key})")
        return repr(name)

    def inline(self, ir: tuple, f: str, values: list[str], t: str | None, line: int) -> str:
        """Write the body of def ``ir`` in place of a call of ``f``: what the
        call does (budget, depth, a new scope for the parameters, the
        policy named on errors), without the Python call; its value goes to
        ``t``, or (None) stays where the body left it."""
        _, name, params, body, cost, index = ir
        unit = self.unit
        self.inlining.append(name)
        saved_scopes = self.scopes
        scope = Scope("func")
        self.scopes = [scope]   # dynamic scoping: the caller's locals are not visible
        try:
            self.charge(cost, str(line))
            leaf = self.enter(name, str(line), body)
            for p, v in zip(params, values):
                self.bind(scope, p, v, body)
            self.emit("try:")
            unit.indent += 1
            unit.blocks += 1
            unit.set_names |= _set_targets(body)
            self.open_scope(scope, body, unit.indent)
            start = len(unit.lines)
            result = self.gen(body)
            if t is not None or not _LOCAL.fullmatch(result) or len(unit.lines) == start:
                t = t or self.temp()
                self.emit(f"{t} = {result}")
                result = t
            scope.close()
            unit.indent -= 1
            unit.blocks -= 1
            for code in self.call_handlers(name, str(line), scope, leaf):
                self.emit(code)
            return result
        finally:
            self.scopes = saved_scopes
            self.inlining.pop()

    def inline_target(self, name: str, nargs: int) -> tuple | None:
        defs = self.defs.get(name)
        if not defs or len(defs) != 1:
            return None
        ir = defs[0]
        if not self.loops or len(ir[2]) != nargs or ir[4] > INLINE_MAX_WEIGHT or \
                ir[4] > self.inline_budget or name in self.inlining or \
                len(self.inlining) >= INLINE_MAX_DEPTH:
            return None
        self.inline_budget -= ir[4]
        return ir

    def defvar(self, ir: tuple) -> str:
        _, name, value = ir
        v = self.gen(value)
        scope = self.scopes[-1]
        if scope.kind == "global":
            t = self.temp()
            self.emit(f"{t} = E.defvar_global({name!r}, {v})")
            return t
        if name not in self.dynamic:
            py = self.use(scope.vars[name])
            if name not in scope.definite:
                if name in scope.assigned:
                    self.emit(f"if {py} is _UNB: {py} = {v}")
                    scope.needs_init.add(name)
                else:
                    # No defvar of the name has run in this scope yet.
                    self.emit(f"{py} = {v}")
                scope.assigned.add(name)
                scope.definite.add(name)
            return py
        t = self.temp()
        if name in scope.definite:
            self.emit(f"{t} = B[{name!r}][-1]")
            return t
        fr = self.use(scope.frame)
        self.emit(f"if {name!r} in {fr}: {t} = B[{name!r}][-1]")
        self.emit("else:")
        self.emit(f"    {fr}.add({name!r})")
        self.emit(f"    B[{name!r}].append({v})")
        self.emit(f"    {t} = {v}")
        scope.definite.add(name)
        return t

    def set_(self, ir: tuple) -> str:
        _, name, value, line = ir
        v = self.stable(self.gen(value))
        steps, sure = self.lookup_steps(name)
        depth = 0
        for definite, py in steps:
            py = self.use(py)
            if definite:
                self.emit(f"{py} = {v}")
                break
            self.emit(f"if {py} is not _UNB: {py} = {v}")
            self.emit("else:")
            self.unit.indent += 1
            depth += 1
        if not sure:
            self.emit(f"try: B[{name!r}][-1] = {v}")
            self.emit(f"except IndexError: raise _PE("
                      f"{_py_str(f'set of undefined variable {name}')}, {line}) from None")
        self.unit.indent -= depth
        if v in self.unit.scope_vars:
            t = self.temp()
            self.emit(f"{t} = {v}")
            return t
        return v

    def snapshot(self) -> list[set[str]]:
        return [set(s.definite) for s in self.scopes]

    def restore(self, saved: list[set[str]]) -> None:
        for scope, definite in zip(self.scopes, saved):
            scope.definite = definite

    def if_(self, ir: tuple) -> str:
        _, cond, then, other = ir
        c = self.gen(cond)
        t = self.temp()
        saved = self.snapshot()
        unit = self.unit
        self.emit(f"if {c}:")
        unit.indent += 1
        self.emit(f"{t} = {self.gen(then)}")
        unit.indent -= 1
        self.restore(saved)
        saved = self.snapshot()
        self.emit("else:")
        unit.indent += 1
        self.emit(f"{t} = {self.gen(other)}")
        unit.indent -= 1
        self.restore(saved)
        return t

    def and_or(self, ir: tuple) -> str:
        kind, operands = ir
        t = self.temp()
        self.emit(f"{t} = {self.gen(operands[0])}")
        saved = self.snapshot()
        test = f"if {t}:" if kind == "and" else f"if not {t}:"
        unit = self.unit
        for operand in operands[1:]:
            self.emit(test)
            unit.indent += 1
            self.emit(f"{t} = {self.gen(operand)}")
            unit.indent -= 1
        self.restore(saved)
        return t

    def let(self, ir: tuple) -> str:
        _, bindings, body = ir
        scope = Scope("let")
        self.scopes.append(scope)
        unit = self.unit
        try:
            self.open_scope(scope, [value for _, value in bindings] + [body], unit.indent)
            dynamic = scope.frame is not None or any(n in self.dynamic for n, _ in bindings)
            if dynamic and scope.frame is None:
                scope.frame = self.var("frame")
                self.emit(f"{self.use(scope.frame)} = set()")
            if dynamic:
                self.emit("try:")
                unit.indent += 1
                unit.blocks += 1
            names = [name for name, _ in bindings]
            assigned = _set_targets([value for _, value in bindings] + [body])
            for name, value in bindings:
                v = self.gen(value)
                if name in self.dynamic:
                    fr = self.use(scope.frame)
                    if name in scope.maybe:
                        self.emit(f"if {name!r} in {fr}: B[{name!r}][-1] = {v}")
                        self.emit(f"else: {fr}.add({name!r}); B[{name!r}].append({v})")
                    elif name in scope.definite:
                        self.emit(f"B[{name!r}][-1] = {v}")
                    else:
                        self.emit(f"{fr}.add({name!r}); B[{name!r}].append({v})")
                elif name not in scope.vars and _TEMP.fullmatch(v) and name not in scope.maybe \
                        and names.count(name) == 1 and name not in assigned:
                    # The temporary holding the value stands for the variable:
                    # nothing assigns either while the let's code runs.
                    scope.vars[name] = v
                    self.local_names.add(name)
                else:
                    py = scope.vars.get(name)
                    if py is None:
                        py = scope.vars[name] = self.var(name)
                        self.local_names.add(name)
                    self.emit(f"{self.use(py)} = {v}")
                scope.definite.add(name)
            result = self.gen(body)
            scope.close()
            if dynamic:
                t = self.temp()
                self.emit(f"{t} = {result}")
                result = t
                unit.indent -= 1
                unit.blocks -= 1
                self.emit("finally:")
                self.emit(f"    for n in {self.use(scope.frame)}: B[n].pop()")
            return result
        finally:
            self.scopes.pop()

    def with_(self, ir: tuple) -> str:
        _, source, list_name, item, body, cost, line = ir
        s = self.gen(source)
        unit = self.unit
        self.emit(f"if type({s}) is not list: raise _witherr({list_name!r}, {s}, {line})")
        r = self.temp()
        el = self.temp()
        self.emit(f"{r} = []")
        self.emit(f"for {el} in {s}:")
        unit.indent += 1
        unit.blocks += 1
        self.charge(cost, str(line))
        scope = Scope("with")
        self.scopes.append(scope)
        try:
            self.bind(scope, item, el, body)
            self.open_scope(scope, body, unit.indent)
            self.emit("try:")
            unit.indent += 1
            unit.blocks += 1
            self.loops += 1
            try:
                self.emit(f"{r}.append({self.gen(body)})")
            finally:
                self.loops -= 1
            scope.close()
            unit.indent -= 1
            unit.blocks -= 1
            located = f"e.located({self.policy!r})" if self.policy is not None else "e"
            self.emit("except _BE: raise")
            self.emit("except _PE as e:")
            self.emit(f"    if type({el}) is not _Ent or {el}.kind != 'guest': raise")
            self.emit(f"    E.guest_failed({el}, {located})")
            self.emit(f"    {r}.append(None)")
            if scope.pushed or scope.frame:
                self.emit("finally:")
                for p in scope.pushed:
                    self.emit(f"    B[{p!r}].pop()")
                if scope.frame:
                    self.emit(f"    for n in {self.use(scope.frame)}: B[n].pop()")
        finally:
            self.scopes.pop()
        unit.indent -= 1
        unit.blocks -= 1
        return r


def _py_str(text: str) -> str:
    return repr(text)


def _params(signature: str) -> list[str]:
    return [p.strip() for p in signature.strip("()").split(",")]


class CompiledPolicy:
    """One checked policy, ready to be written as Python for a given set.

    ``free`` are the names its def bodies reference freely, ``binds`` the
    names its binding forms may bind; ``program`` returns its top-level
    functions for the set's free names and what the other policies bind,
    writing and compiling the source at most once per distinct answer that
    matters to this policy.  The analysis is made on first use, from a code
    cache (see ``codecache``) when one is given and holds it: checking a
    policy (``compile_policy``) writes no code.
    """

    def __init__(self, policy: str | None, tree: list[tuple], text: str | None = None,
                 defs: list[tuple] | None = None) -> None:
        self.policy = policy
        self.tree = tree
        #: The def nodes of the tree, nested ones included.
        self.defs = defs if defs is not None else _find_defs(tree)
        #: The source text, the code cache's key (None: never cached).
        self.text = text
        self._programs: dict[tuple[frozenset[str], frozenset[str]], list] = {}
        self._first: tuple[Generator, list[str]] | None = None
        self._free: frozenset[str] | None = None
        self._local_names: frozenset[str] = frozenset()
        self._binds: frozenset[str] | None = None
        self._sensitive: frozenset[str] | None = None

    def analyse(self, cache: CodeCache | None = None) -> None:
        """Find ``free`` and ``local_names``, from ``cache`` if it has them."""
        if self._free is not None:
            return
        key = None
        if cache is not None and self.text is not None:
            key = cache_key(cache, "analysis", self.policy, self.text)
            data = cache.load(key)
            if data is not None:
                try:
                    self._free, self._local_names = load_analysis(key, data)
                    return
                except ValueError as e:
                    cache.discard(key, str(e))
        generator = Generator(self.policy, frozenset())
        generator.prepare(self.tree, self.defs)
        self._first = generator, [generator.top_level(ir) for ir in self.tree]
        self._local_names = frozenset(generator.local_names)
        self._free = frozenset(generator.free)
        if key is not None:
            cache.store(key, dump_analysis(key, self._free, self._local_names))

    @property
    def free(self) -> frozenset[str]:
        self.analyse()
        return self._free  # type: ignore[return-value]

    @property
    def local_names(self) -> frozenset[str]:
        self.analyse()
        return self._local_names

    @property
    def binds(self) -> frozenset[str]:
        """Every name the policy's binding forms may bind."""
        if self._binds is None:
            self._binds = frozenset(bound_names(self.tree))
        return self._binds

    def program(self, free: frozenset[str], others: frozenset[str] = frozenset(),
                cache: CodeCache | None = None) -> list:
        """The functions of the top-level expressions, in order, for the
        set's free names and the names its other policies bind."""
        self.analyse(cache)
        if self._sensitive is None:
            # What the code depends on of the names other policies bind.
            self._sensitive = _INLINE_BUILTINS | frozenset(
                direct_defs(self.tree, self.defs, frozenset()))
        key = free & self._local_names, others & self._sensitive
        program = self._programs.get(key)
        if program is None:
            entry = None
            if cache is not None and self.text is not None:
                entry = cache_key(cache, "program", self.policy, self.text, *key)
                program = _load(cache, entry, self.tree, self.defs, self.policy, key)
            if program is None:
                if not key[0] and not key[1] and self._first is not None:
                    generator, names = self._first
                else:
                    generator = Generator(self.policy, *key)
                    generator.prepare(self.tree, self.defs)
                    names = [generator.top_level(ir) for ir in self.tree]
                program = _build(generator, names, self.policy,
                                 cache if entry is not None else None, entry)
            self._programs[key] = program
            # The source is not needed any more (the tree can write it again).
            self._first = None
        return program


def _build(generator: Generator, names: list[str], policy: str | None,
           cache: CodeCache | None = None, key: str | None = None) -> list:
    source = "\n\n".join(generator.functions) + "\n"
    code = compile(source, f"<policy {policy}>", "exec")
    if cache is not None and key is not None:
        consts = {k: v for k, v in generator.consts.items() if k not in generator.user_functions}
        try:
            data = dump_program(key, code, names, generator.runs, consts)
        except ValueError:
            pass  # a constant marshal cannot keep: compiled again next time
        else:
            cache.store(key, data)
    return _link(code, generator, names, generator.runs, {})


def _find_defs(tree: list[tuple]) -> list[tuple]:
    """The def nodes of a tree (what ``Checker.def_nodes`` lists)."""
    return sorted((node for node in walk(tree) if node[0] == "def"), key=lambda node: node[5])


def direct_defs(tree: list[tuple], defs: list[tuple], others: frozenset[str]
                ) -> dict[str, tuple[int, tuple]]:
    """The defs a call may reach without a lookup, by name (see
    ``Generator.direct``): made at the top level of ``tree``, the only def
    of their name among ``defs``, their name bound by no other form of the
    tree nor in ``others``."""
    bound = bound_names(tree, defs=False) | others
    count: dict[str, int] = {}
    for node in defs:
        count[node[1]] = count.get(node[1], 0) + 1
    return {ir[1]: (position, ir) for position, ir in enumerate(tree)
            if ir[0] == "def" and count[ir[1]] == 1 and ir[1] not in bound}


def _load(cache: CodeCache, key: str, tree: list[tuple], defs: list[tuple],
          policy: str | None, names_key: tuple[frozenset[str], frozenset[str]]) -> list | None:
    """The program kept under ``key``, or None (a miss)."""
    data = cache.load(key)
    if data is None:
        return None
    try:
        code, names, runs, consts = load_program(key, data)
        # The UserFunction of every def, as the generator that wrote the
        # code made them (the code refers to them as constants D<index>).
        generator = Generator(policy, *names_key)
        generator.prepare(tree, defs)
        if set(runs) != set(generator.user_functions) or len(names) != len(tree) or \
                set(consts) & set(generator.consts):
            raise ValueError("the entry does not fit the policy's defs")
        return _link(code, generator, names, runs, consts)
    except ValueError as e:
        cache.discard(key, str(e))
        return None


def _link(code: Any, generator: Generator, names: list[str], runs: dict[str, str],
          consts: dict[str, Any]) -> list:
    namespace = dict(NAMESPACE)
    namespace.update(generator.consts)
    namespace.update(consts)
    exec(code, namespace)  # noqa: S102 -- code written from a checked tree
    try:
        for key, fn in generator.user_functions.items():
            fn.run = namespace[runs[key]]
        return [namespace[n] for n in names]
    except KeyError as e:
        raise ValueError(f"the code defines no {e}") from None
