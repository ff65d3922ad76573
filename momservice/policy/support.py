"""What the code ``codegen`` writes calls: its names and slow paths.

The generated functions run with ``NAMESPACE`` as their globals; the short
names keep the generated source small (its compile time is most of the
time a policy takes to load).  Everything here raises PolicyError with the
message and line the language defines.
"""

from __future__ import annotations

from typing import Any

from .builtins import (ARITHMETIC_ERRORS, BINARY_OPERATORS, BUILTINS, ENTITY_METHODS,
                       MAX_INT_BITS, MAX_SEQUENCE, SEQUENCE_OPERATORS, operand_error)
from .entity import Entity
from .errors import PolicyBudgetError, PolicyError, PolicyLimitError
from .records import PolicyRecord
from .runtime import UNBOUND, Builtin, Env, UserFunction, show

_HUGE = 1 << MAX_INT_BITS  # an int at or beyond it has more than MAX_INT_BITS bits
_NO_CONTROLS: dict = {}


def _operr(symbol: str, x: Any, y: Any, error: Exception, line: int) -> PolicyError:
    return operand_error(symbol, x, y, error, line)


def _capped(env: Env, symbol: str, x: Any, y: Any, result: Any, line: int) -> Any:
    """Bound a result that is not a float (an int, a string or a list)."""
    kind = type(result)
    if kind is int:
        if result.bit_length() > MAX_INT_BITS:
            raise operand_error(symbol, x, y, ValueError(
                f"result larger than {MAX_INT_BITS} bits"), line)
    elif kind is str or kind is list:
        if len(result) > MAX_SEQUENCE:
            raise operand_error(symbol, x, y, ValueError(
                f"result longer than {MAX_SEQUENCE}"), line)
        if symbol in SEQUENCE_OPERATORS:
            env.steps -= len(result)
            if env.steps < 0:
                raise PolicyBudgetError("evaluation exceeded its step budget", line)
    return result


def _binary(env: Env, symbol: str, x: Any, y: Any, line: int) -> Any:
    """Any operator through the general table (products, shifts)."""
    try:
        result = BINARY_OPERATORS[symbol](x, y)
    except ARITHMETIC_ERRORS as e:
        raise operand_error(symbol, x, y, e, line) from None
    if symbol in SEQUENCE_OPERATORS and (type(result) is str or type(result) is list):
        env.steps -= len(result)
        if env.steps < 0:
            raise PolicyBudgetError("evaluation exceeded its step budget", line)
    return result


def _cannot_compare(name: str, args: list, line: int) -> PolicyError:
    return PolicyError(f"{name} cannot compare {', '.join(map(show, args))}", line)


def _abs_error(x: Any, line: int) -> PolicyError:
    return PolicyError(f"abs of {show(x)}", line)


def _nargs(fn: UserFunction, given: int, line: int) -> PolicyError:
    return PolicyError(f"function {fn.name} takes {fn.nparams} argument(s), {given} given",
                       line)


def _attribute(obj: Any, attr: str, name: str, line: int) -> Any:
    if type(obj) is Entity:
        try:
            return obj.stat(attr)
        except PolicyError as e:
            e.line = line
            raise
    if isinstance(obj, PolicyRecord):
        try:
            return obj.attribute(attr)
        except KeyError:
            pass
    raise PolicyError(f"{name}: {show(obj)} has no attribute {attr}", line)


def _stat_avg(obj: Entity, field: str, line: int) -> Any:
    try:
        return obj.stat_avg(field)
    except PolicyError as e:
        if e.line is None:
            e.line = line
        raise


def _method(env: Env, obj: Entity, method: str, args: list, line: int) -> Any:
    try:
        return ENTITY_METHODS[method](env, obj, args, line)
    except PolicyError as e:
        if e.line is None:
            e.line = line
        raise


def _record_method(env: Env, obj: Any, base: str, method: str, args: list,
                   line: int) -> Any:
    """A method that is not an entity's: a record's setter, else an error."""
    entry = env.writes.get(id(obj))
    if entry is None or entry[0] is not obj:
        if not isinstance(obj, PolicyRecord):
            raise PolicyError(f"{base} has no method {method}", line)
        entry = env.writes[id(obj)] = (obj, {})
    try:
        return obj.call(method, args, entry[1])
    except PolicyError as e:
        if e.line is None:
            e.line = line
        raise


def _with_error(name: str, value: Any, line: int) -> PolicyError:
    return PolicyError(f"with: {name} is {show(value)}, not a list", line)


def _depth_error(env: Env, name: str, line: int) -> PolicyError:
    return PolicyLimitError(f"calls nested deeper than {env.max_depth} in function {name}",
                            line)


NAMESPACE: dict[str, Any] = {
    "__builtins__": {"type": type, "float": float, "int": int, "str": str, "list": list,
                     "set": set, "max": max, "min": min, "abs": abs, "len": len,
                     "IndexError": IndexError, "LookupError": LookupError,
                     "KeyError": KeyError, "AttributeError": AttributeError,
                     "TypeError": TypeError, "RecursionError": RecursionError},
    "_PE": PolicyError, "_BE": PolicyBudgetError, "_LE": PolicyLimitError,
    "_AE": ARITHMETIC_ERRORS, "_UF": UserFunction, "_BI": Builtin, "_Ent": Entity,
    "_UNB": UNBOUND, "_H": _HUGE, "_NH": -_HUGE, "_NOC": _NO_CONTROLS,
    "_operr": _operr, "_capped": _capped, "_binary": _binary,
    "_cmp": _cannot_compare, "_abserr": _abs_error, "_nargs": _nargs,
    "_attr": _attribute, "_savg": _stat_avg, "_method": _method, "_rmethod": _record_method,
    "_witherr": _with_error, "_deptherr": _depth_error,
    "_B_max": BUILTINS["max"], "_B_min": BUILTINS["min"], "_B_abs": BUILTINS["abs"],
    "_B_not": BUILTINS["not"], "_B_valid": BUILTINS["valid"],
}
