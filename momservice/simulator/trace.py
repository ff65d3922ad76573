"""Recorded memory traces: a guest's working set replayed from real VMs.

Two formats:

* ``gwa``: the Grid Workloads Archive format of the Bitbrains GWA-T-12
  traces: ``;``-separated (a tab after each ``;``), a header line naming
  the columns.  Three are read: ``Timestamp [ms]`` (which, despite its
  name, holds seconds since the epoch), ``Memory capacity provisioned
  [KB]`` and ``Memory usage [KB]``.  One sample every 300 s.
* ``csv``: ``seconds,kib`` per line, an optional header line ``seconds,kib``.
  It has no provisioned memory: a guest replaying one must be given its
  ``memory_mib``.

How the awkward samples are read:

* Usage above the provisioned memory (a few GWA rows): the guest cannot
  hold more than it has; the sample counts as the provisioned memory
  (the model further caps a working set at 95 % of the maximum).
* Usage 0 (whole runs of GWA rows in some VMs): a running guest always
  holds some memory, so 0 is a gap in the monitoring, not an empty guest;
  the last measured value holds over it (before the first measured value,
  that first value).  A trace with no measured value at all is refused.
* Between two samples the working set is **interpolated linearly**.  A
  sample is the state at its timestamp and a trace says nothing of the
  300 s between two; holding each value would make every change land at
  once at the sample time (a jump of a gigabyte within one second), an
  artefact of the sampling that no policy could follow and no guest
  showed.  The cost: a burst shorter than the sampling interval is
  smoothed away, but such a burst is not in the trace either way.
* Past the last sample the last value holds.

Guests replay a trace from its first sample (plus the workload's
``offset``): time 0 of the simulation is the trace's first timestamp.

A bad trace (unreadable, a required column missing, a line that does not
parse, timestamps that go back, no samples) is a ``ValueError`` naming
the file and the line.  Parsed traces are cached by path (and the file's
size and modification time), so that a lab run reads each file once
however many scenarios, policy sets and overcommit steps use it.
"""

from __future__ import annotations

import bisect
import math
import operator
import os
from dataclasses import dataclass
from pathlib import Path

FORMATS = ("gwa", "csv")

#: The GWA-T-12 columns read (the others are ignored).
GWA_TIME = "Timestamp [ms]"
GWA_PROVISIONED = "Memory capacity provisioned [KB]"
GWA_USAGE = "Memory usage [KB]"

#: Parsed traces kept at most (the Bitbrains sets have hundreds of files).
_CACHE_SIZE = 512


@dataclass(frozen=True, eq=False)
class Trace:
    """A parsed trace: sample times (seconds from the first) and usage (KiB).

    ``provisioned_kib`` is the largest provisioned memory of the trace
    (0 for a csv trace, which does not say).  Compared by identity: a
    trace is one file's content, and scenarios holding it compare fast.
    """

    path: str
    times: tuple[float, ...]
    usage_kib: tuple[float, ...]
    provisioned_kib: float

    @property
    def duration(self) -> float:
        """Seconds from the first sample to the last."""
        return self.times[-1]

    def usage_at(self, t: float) -> float:
        """Usage (KiB) at ``t`` seconds from the first sample, interpolated."""
        times = self.times
        if t <= 0.0:
            return self.usage_kib[0]
        i = bisect.bisect_right(times, t)
        if i >= len(times):
            return self.usage_kib[-1]
        t0, t1 = times[i - 1], times[i]
        u0, u1 = self.usage_kib[i - 1], self.usage_kib[i]
        return u0 + (u1 - u0) * (t - t0) / (t1 - t0)


_cache: dict[tuple[str, str, int, int], Trace] = {}


def load_trace(path: str | Path, fmt: str = "gwa") -> Trace:
    """The parsed trace in ``path`` (cached); ValueError naming file and line if unfit."""
    if fmt not in FORMATS:
        raise ValueError(f"trace {path}: format must be one of {', '.join(FORMATS)}, "
                         f"got {fmt!r}")
    name = str(path)
    try:
        status = os.stat(name)
        key = (os.path.realpath(name), fmt, status.st_size, status.st_mtime_ns)
        cached = _cache.get(key)
        if cached is not None:
            return cached
        with open(name, encoding="utf-8", errors="strict") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise ValueError(f"trace {name}: cannot read it: {reason}") from None
    trace = parse_trace(text, fmt, name)
    if len(_cache) >= _CACHE_SIZE:
        _cache.clear()
    _cache[key] = trace
    return trace


def parse_trace(text: str, fmt: str, name: str = "trace") -> Trace:
    """A Trace from the text of a trace file (``name`` is for the messages)."""
    if fmt == "gwa":
        times, usage, provisioned = _parse_gwa(text, name)
    elif fmt == "csv":
        times, usage = _parse_csv(text, name)
        provisioned = 0.0
    else:
        raise ValueError(f"trace {name}: format must be one of {', '.join(FORMATS)}, "
                         f"got {fmt!r}")
    return _finish(name, times, usage, provisioned)


def _parse_gwa(text: str, name: str) -> tuple[list[float], list[float], float]:
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise ValueError(f"trace {name} line 1: no header line (GWA traces start with "
                         f"the column names, {GWA_TIME!r}; ...)")
    columns = [c.strip() for c in lines[0].split(";")]
    index = {}
    for wanted in (GWA_TIME, GWA_PROVISIONED, GWA_USAGE):
        if wanted not in columns:
            raise ValueError(f"trace {name} line 1: no column {wanted!r} "
                             f"(columns: {'; '.join(columns)})")
        index[wanted] = columns.index(wanted)
    it, ip, iu = index[GWA_TIME], index[GWA_PROVISIONED], index[GWA_USAGE]
    need = max(it, ip, iu) + 1
    times: list[float] = []
    provisioned: list[float] = []
    usage: list[float] = []
    numbers: list[int] = []
    # The loop only splits and converts (a week of samples is 2016 lines,
    # a lab run reads dozens of files); the checks run over whole columns.
    for number, line in enumerate(lines[1:], 2):
        fields = line.split(";")
        if len(fields) < need:
            if not line.strip():
                continue
            raise ValueError(f"trace {name} line {number}: {len(fields)} fields, "
                             f"expected {len(columns)}")
        try:
            # float() takes the tab after each ';' in its stride.
            times.append(float(fields[it]))
            provisioned.append(float(fields[ip]))
            usage.append(float(fields[iu]))
        except ValueError:
            raise ValueError(f"trace {name} line {number}: not a number in "
                             f"{line.strip()!r}") from None
        numbers.append(number)
    _check(name, numbers, times, provisioned, usage)
    # Usage above the provisioned memory counts as the provisioned memory.
    usage = [u if u <= p else p for u, p in zip(usage, provisioned)]
    return times, usage, max(provisioned, default=0.0)


def _parse_csv(text: str, name: str) -> tuple[list[float], list[float]]:
    times: list[float] = []
    usage: list[float] = []
    numbers: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 2:
            raise ValueError(f"trace {name} line {number}: expected two columns "
                             f"(seconds,kib), got {line.strip()!r}")
        try:
            t, u = float(fields[0]), float(fields[1])
        except ValueError:
            if number == 1 and not times:
                if [f.lower() for f in fields] != ["seconds", "kib"]:
                    raise ValueError(f"trace {name} line 1: unknown columns "
                                     f"{line.strip()!r} (expected seconds,kib)") from None
                continue
            raise ValueError(f"trace {name} line {number}: not a number in "
                             f"{line.strip()!r}") from None
        times.append(t)
        usage.append(u)
        numbers.append(number)
    _check(name, numbers, times, usage, usage)
    return times, usage


def _check(name: str, numbers: list[int], times: list[float], provisioned: list[float],
           usage: list[float]) -> None:
    """ValueError naming the first line whose figures cannot be right."""
    for column in (times, provisioned, usage):
        if not all(map(math.isfinite, column)):
            bad = next(i for i, v in enumerate(column) if not math.isfinite(v))
            raise ValueError(f"trace {name} line {numbers[bad]}: not a finite number")
    for column in (provisioned, usage):
        if column and min(column) < 0:
            bad = next(i for i, v in enumerate(column) if v < 0)
            raise ValueError(f"trace {name} line {numbers[bad]}: negative memory")
    if all(map(operator.lt, times, times[1:])):
        return
    for i in range(1, len(times)):
        if times[i] <= times[i - 1]:
            raise ValueError(f"trace {name} line {numbers[i]}: time {times[i]:g} does not "
                             f"come after the previous sample's ({times[i - 1]:g})")


def _finish(name: str, times: list[float], usage: list[float],
            provisioned: float) -> Trace:
    if not times:
        raise ValueError(f"trace {name}: no samples")
    measured = [u for u in usage if u > 0]
    if not measured:
        raise ValueError(f"trace {name}: every sample reports 0 memory in use")
    # 0 is a gap in the monitoring: the last measured value holds over it.
    last = measured[0]
    filled = []
    for u in usage:
        if u > 0:
            last = u
        filled.append(last)
    start = times[0]
    return Trace(path=name, times=tuple(t - start for t in times),
                 usage_kib=tuple(filled), provisioned_kib=provisioned)
