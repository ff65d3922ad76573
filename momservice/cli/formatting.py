"""Pure helpers of momctl: parsing sizes and values, formatting for people.

Nothing here touches the bus; every function is tested on its own.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from dbus_next import Variant

from ..collectors.ksm import KSM_TUNABLES
from ..fields import KIB, MICROSECONDS, Field
from .policy_tools import UsageError

UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# -- sizes ---------------------------------------------------------------------

_UNITS_KIB = {"k": 1, "m": 1024, "g": 1024**2, "t": 1024**3}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(i?b)?)?\s*$",
                      re.IGNORECASE | re.ASCII)


def parse_size(text: str) -> int:
    """A memory size in KiB from ``text``.

    A plain number is KiB; otherwise a number (decimals allowed) followed by
    a binary unit K, M, G or T, optionally with a ``B`` or ``iB`` suffix, in
    any case: ``1048576``, ``1048576K``, ``512M``, ``2G``, ``1.5GiB``,
    ``1 TB``.  The result is rounded to the nearest KiB.  UsageError for
    anything else, negative numbers included.
    """
    match = _SIZE_RE.match(text)
    if match is None:
        raise UsageError(f"invalid size {text!r}: expected KiB (a plain number) or a number "
                         "with a unit K, M, G or T (e.g. 512M, 2G, 1.5GiB)")
    number, unit = match.group(1), match.group(2)
    value = Fraction(number) * _UNITS_KIB[(unit or "k").lower()]
    kib = math.floor(value + Fraction(1, 2))
    if kib > UINT64_MAX:
        raise UsageError(f"invalid size {text!r}: too large")
    return kib


def format_kib(kib: int | float | None) -> str:
    """A KiB amount for people: ``512 KiB``, ``1.5 MiB``, ``12.3 GiB``."""
    if kib is None:
        return "-"
    value = float(kib)
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value < 1024:
        return f"{sign}{value:.0f} KiB" if value == int(value) else f"{sign}{value:.1f} KiB"
    for unit in ("MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            # 1023.96 MiB rounds to "1024.0 MiB": show the next unit instead.
            if round(value, 1) >= 1024 and unit != "PiB":
                continue
            return f"{sign}{value:.1f} {unit}"
    raise AssertionError("unreachable")


def kib_text(kib: int) -> str:
    """``1.5 GiB (1572864 KiB)``; just ``512 KiB`` below 1 MiB."""
    return format_kib(kib) if abs(kib) < 1024 else f"{format_kib(kib)} ({kib} KiB)"


# -- values for the service ------------------------------------------------------

def parse_assignment(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` split; UsageError when there is no ``=`` or no name."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise UsageError(f"{text!r}: expected NAME=VALUE")
    return name, raw


def param_variant(raw: str) -> Variant:
    """A parameter value for ``SetParameters``: JSON if it parses, else a string.

    JSON true/false -> ``b``, an integer -> ``x`` (int64), a number with a
    fraction or exponent -> ``d``, a JSON string or anything that is not JSON
    -> ``s``.  null, arrays and objects cannot be parameters.
    """
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return Variant("s", raw)
    if isinstance(value, bool):
        return Variant("b", value)
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise UsageError(f"{raw}: integer out of the int64 range")
        return Variant("x", value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UsageError(f"{raw}: not a finite number")
        return Variant("d", value)
    if isinstance(value, str):
        return Variant("s", value)
    kind = "null" if value is None else type(value).__name__
    raise UsageError(f"{raw}: a parameter must be a boolean, number or string, not {kind}")


#: SetKsm's keys, as momctl accepts them (``-`` may stand for ``_``): the
#: KSM tunables.
KSM_KEYS: tuple[str, ...] = KSM_TUNABLES


def ksm_setting(text: str) -> tuple[str, Variant]:
    """``KEY=VALUE`` for ``SetKsm``: a known key and an unsigned 32-bit integer."""
    name, raw = parse_assignment(text)
    key = name.replace("-", "_").lower()
    if key not in KSM_KEYS:
        raise UsageError(f"unknown KSM setting {name!r}; expected one of {', '.join(KSM_KEYS)}")
    raw = raw.strip()
    if not re.fullmatch(r"\d+", raw):
        raise UsageError(f"{name}={raw}: expected a non-negative integer")
    value = int(raw)
    if value > UINT32_MAX:
        raise UsageError(f"{name}={raw}: too large (at most {UINT32_MAX})")
    return key, Variant("u", value)


CPU_TUNE_KEYS: tuple[str, ...] = ("quota", "period")


def cputune_setting(text: str) -> tuple[str, Variant]:
    """``quota=N`` (-1 or more, ``x``) or ``period=N`` (``t``) for ``SetCpuTune``,
    microseconds; the service checks libvirt's ranges."""
    name, raw = parse_assignment(text)
    key = name.strip().lower()
    if key not in CPU_TUNE_KEYS:
        raise UsageError(f"unknown CPU tuning {name!r}; expected quota=MICROSECONDS "
                         f"(-1: unlimited) or period=MICROSECONDS")
    raw = raw.strip()
    pattern = r"-1|\d+" if key == "quota" else r"\d+"
    if not re.fullmatch(pattern, raw):
        raise UsageError(f"{name}={raw}: expected a number of microseconds"
                         + (" or -1" if key == "quota" else ""))
    value = int(raw)
    if value >= 2**63:
        raise UsageError(f"{name}={raw}: too large")
    return key, Variant("x" if key == "quota" else "t", value)


# -- time ------------------------------------------------------------------------

def format_duration_us(us: int | float | None) -> str:
    """A duration in microseconds for people: ``850 us``, ``12.3 ms``, ``1.50 s``."""
    if us is None:
        return "-"
    if us < 1000:
        return f"{us:.0f} us"
    if us < 1_000_000:
        return f"{us / 1000:.1f} ms"
    return f"{us / 1_000_000:.2f} s"


def format_age(seconds: float) -> str:
    """``3 s ago``, ``2 min ago``, ``1.5 h ago``, ``in the future``."""
    if seconds < -1:
        return "in the future"
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f} s ago"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def format_timestamp_us(us: int, now: float | None = None) -> str:
    """Microseconds since the epoch as local time and age; ``never`` for 0."""
    if not us:
        return "never"
    seconds = us / 1_000_000
    now = time.time() if now is None else now
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
    return f"{stamp} ({format_age(now - seconds)})"


# -- tables and values -------------------------------------------------------------

def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                 right: Sequence[int] = ()) -> list[str]:
    """Lines of a plain text table, columns padded; ``right``: right-aligned columns."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                 for i, cell in enumerate(row)]
        lines.append("  ".join(parts).rstrip())
    return lines


def format_value(value: Any) -> str:
    """A property or statistic value, as the policy language would write it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.1f}"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def field_text(field: Field | None, value: Any) -> str:
    """A property's value for people, in the unit the field catalogue gives it.

    KiB in human units too, an enumeration with the name of its value, a
    measured float to one decimal with its unit symbol, a string as it is.
    """
    if field is not None and not isinstance(value, bool):
        if field.unit is KIB and isinstance(value, int):
            return kib_text(value)
        if field.unit is MICROSECONDS and isinstance(value, int):
            # vcpu_quota's -1 is a setting, not a duration; 0 is "not known".
            return {-1: "-1 (unlimited)", 0: "unknown"}.get(value, f"{value} us")
        if field.states and isinstance(value, int):
            return f"{format_value(value)} ({field.state(value) or 'unknown'})"
        if field.unit is not None and field.signature == "d" and isinstance(value, float):
            return f"{value:.1f} {field.unit.symbol}"
    return value if isinstance(value, str) else format_value(value)


def to_json(value: Any) -> Any:
    """Unwrapped D-Bus data as plain JSON data (non-finite floats as strings)."""
    if isinstance(value, Variant):
        return to_json(value.value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def dump_json(value: Any) -> str:
    return json.dumps(to_json(value), indent=2, sort_keys=False)
