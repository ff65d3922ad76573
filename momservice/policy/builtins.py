"""Operators and built-in functions of the policy language.

Each raises PolicyError for bad operands: Python's own exceptions never
leave an evaluation.  Results that could grow without bound (repetition,
concatenation, shifts) are capped so a policy cannot exhaust memory.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

from .entity import Entity
from .errors import PolicyError
from .runtime import Builtin, Env, show

#: Longest string or list a policy may build.
MAX_SEQUENCE = 1_000_000
#: Largest integer a product or a shift may build.  Memory sizes need 64
#: bits; the bound only stops runaway growth (repeated squaring).
MAX_INT_BITS = 4096

ARITHMETIC_ERRORS = (TypeError, ValueError, ZeroDivisionError, OverflowError,
                     MemoryError)


def _cap(result: Any) -> Any:
    kind = type(result)
    if kind is int:
        if result.bit_length() > MAX_INT_BITS:
            raise ValueError(f"result larger than {MAX_INT_BITS} bits")
    elif (kind is str or kind is list) and len(result) > MAX_SEQUENCE:
        raise ValueError(f"result longer than {MAX_SEQUENCE}")
    return result


def _add(x: Any, y: Any) -> Any:
    return _cap(x + y)


def _sub(x: Any, y: Any) -> Any:
    return _cap(x - y)


#: Operators that can build strings and lists: the compiler charges the
#: length of what they build to the step budget, which bounds the total
#: memory an evaluation can allocate, not just the size of one value.
SEQUENCE_OPERATORS = frozenset({"+", "*"})


def _mul(x: Any, y: Any) -> Any:
    # Check before multiplying: the product itself is what would be huge.
    for seq, count in ((x, y), (y, x)):
        if type(seq) in (str, list) and type(count) in (int, bool):
            if len(seq) * count > MAX_SEQUENCE:
                raise ValueError(f"result longer than {MAX_SEQUENCE}")
    if type(x) is int and type(y) is int and x.bit_length() + y.bit_length() > MAX_INT_BITS:
        raise ValueError(f"result larger than {MAX_INT_BITS} bits")
    return x * y


def _lshift(x: Any, y: Any) -> Any:
    if type(x) is int and type(y) is int and x.bit_length() + y > MAX_INT_BITS:
        raise ValueError(f"result larger than {MAX_INT_BITS} bits")
    return x << y


BINARY_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+": _add,
    "-": _sub,
    "*": _mul,
    "/": operator.truediv,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<<": _lshift,
    ">>": operator.rshift,
}


def operand_error(symbol: str, x: Any, y: Any, error: Exception, line: int) -> PolicyError:
    """The PolicyError for a binary operator whose operands Python refused."""
    if isinstance(error, ZeroDivisionError):
        return PolicyError("division by zero", line)
    reason = str(error) if isinstance(error, ValueError) else "unsupported operand types"
    return PolicyError(f"cannot apply {symbol} to {show(x)} and {show(y)}: {reason}", line)


# -- built-in functions ------------------------------------------------------

def _arity(name: str, args: list, line: int, exactly: int | None = None,
           at_least: int | None = None) -> None:
    if exactly is not None and len(args) != exactly:
        raise PolicyError(f"{name} takes exactly {exactly} operand(s), {len(args)} given", line)
    if at_least is not None and len(args) < at_least:
        raise PolicyError(f"{name} takes at least {at_least} operand(s), {len(args)} given", line)


def _not(env: Env, args: list, line: int) -> bool:
    _arity("not", args, line, exactly=1)
    return not args[0]


def _extreme(name: str, pick: Callable) -> Callable[[Env, list, int], Any]:
    def extreme(env: Env, args: list, line: int) -> Any:
        _arity(name, args, line, at_least=1)
        try:
            return pick(args)
        except TypeError:
            raise PolicyError(f"{name} cannot compare {', '.join(map(show, args))}",
                              line) from None
    return extreme


def _abs(env: Env, args: list, line: int) -> Any:
    _arity("abs", args, line, exactly=1)
    try:
        return abs(args[0])
    except TypeError:
        raise PolicyError(f"abs of {show(args[0])}", line) from None


def _is_empty(value: Any) -> bool:
    return value is None or (type(value) in (str, list) and len(value) == 0)


def _null(env: Env, args: list, line: int) -> bool:
    return all(_is_empty(v) for v in args)


def _valid(env: Env, args: list, line: int) -> bool:
    return all(v is not None for v in args)


def _debug(env: Env, args: list, line: int) -> Any:
    # The engine is pure: messages are handed back with the result and the
    # caller logs them.
    env.messages.append(f"line {line}: " + " ".join(
        v if type(v) is str else show(v, 200) for v in args))
    return args[-1] if args else None


BUILTINS: dict[str, Builtin] = {b.name: b for b in (
    Builtin("not", _not),
    Builtin("min", _extreme("min", min)),
    Builtin("max", _extreme("max", max)),
    Builtin("abs", _abs),
    Builtin("null", _null),
    Builtin("valid", _valid),
    Builtin("debug", _debug),
)}


# -- methods of entities -----------------------------------------------------

def _name_arg(method: str, args: list, count: int, line: int) -> str:
    if len(args) != count:
        raise PolicyError(f"{method} takes {count} argument(s), {len(args)} given", line)
    name = args[0]
    if type(name) is not str:
        raise PolicyError(f"{method} wants a name string, not {show(name)}", line)
    return name


def _stat(env: Env, entity: Entity, args: list, line: int) -> Any:
    return entity.stat(_name_arg("Stat", args, 1, line))


def _stat_avg(env: Env, entity: Entity, args: list, line: int) -> Any:
    return entity.stat_avg(_name_arg("StatAvg", args, 1, line))


def _prop(env: Env, entity: Entity, args: list, line: int) -> Any:
    return entity.prop(_name_arg("Prop", args, 1, line))


def _control(env: Env, entity: Entity, args: list, line: int) -> Any:
    name = _name_arg("Control", args, 2, line)
    controls = env.controls.get(entity)
    if controls is None:
        controls = env.controls[entity] = {}
    controls[name] = args[1]
    return args[1]


def _get_control(env: Env, entity: Entity, args: list, line: int) -> Any:
    name = _name_arg("GetControl", args, 1, line)
    return env.controls.get(entity, {}).get(name)


def _set_var(env: Env, entity: Entity, args: list, line: int) -> Any:
    name = _name_arg("SetVar", args, 2, line)
    if env.variables is None:
        entity.variables[name] = args[1]
    else:
        env.variables.setdefault(entity, {})[name] = args[1]
    return args[1]


def _get_var(env: Env, entity: Entity, args: list, line: int) -> Any:
    name = _name_arg("GetVar", args, 1, line)
    if env.variables is not None:
        written = env.variables.get(entity)
        if written is not None and name in written:
            return written[name]
    return entity.variables.get(name)


ENTITY_METHODS: dict[str, Callable[[Env, Entity, list, int], Any]] = {
    "Stat": _stat,
    "StatAvg": _stat_avg,
    "Prop": _prop,
    "Control": _control,
    "GetControl": _get_control,
    "SetVar": _set_var,
    "GetVar": _get_var,
}
