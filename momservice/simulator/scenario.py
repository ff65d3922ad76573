"""What a simulation runs: the host, its guests and their workloads.

A scenario comes from a ``sim://`` URI, either generated from a few query
parameters::

    sim:///?guests=8&overcommit=1.5&seed=1&step=0.5

or built from a directory of recorded traces (``trace``: GWA-T-12 files;
``guests`` of them chosen by ``seed``, each guest replaying one from its
start, its maximum memory the trace's provisioned memory)::

    sim:///?traces=../shared/traces/bitbrains-rnd&guests=8&overcommit=2&seed=1

or read from a TOML file (query parameters then override the file's
seed, step, speed and duration)::

    sim:///path/to/scenario.toml?seed=3

``sim:///`` alone is the default scenario of ``make run``.  Every problem
is a ``ValueError`` naming the key (and the file) at fault.

Sizes are MiB (keys ending in ``_mib``), times seconds; workload levels are
shares of the guest's maximum memory, so a workload reads the same on a
small guest and a big one.
"""

from __future__ import annotations

import math
import random
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from ..collectors.ksm import KSM_TUNABLES
from .trace import FORMATS as TRACE_FORMATS
from .trace import Trace, load_trace
from .uri import is_sim_uri  # noqa: F401 -- where callers have found it

#: Workload kinds, each with its parameters and their defaults.  Levels
#: (level, peak, start, end, low, high, burst, noise) are shares of the
#: guest's maximum memory; times are seconds of simulated time.
WORKLOAD_PARAMS: dict[str, dict[str, float]] = {
    # A constant working set.
    "steady": {"level": 0.40, "noise": 0.01},
    # From ``start`` to ``end``, linearly, between ``begin`` and ``begin + length``.
    "ramp": {"start": 0.20, "end": 0.70, "begin": 0.0, "length": 1800.0, "noise": 0.01},
    # ``level``, jumping to ``peak`` at ``at`` for ``length`` seconds, again
    # every ``every`` seconds (0: once).
    "spike": {"level": 0.30, "peak": 0.85, "at": 30.0, "length": 300.0, "every": 0.0,
              "noise": 0.01},
    # Between ``low`` and ``high`` along a cosine of ``period`` seconds
    # (a "day"), starting at ``low`` when ``phase`` is 0 (phase in periods).
    "diurnal": {"low": 0.20, "high": 0.60, "period": 3600.0, "phase": 0.0, "noise": 0.01},
    # Mostly ``level``; bursts to ``burst`` of ``burst_length`` seconds at
    # random, ``bursts_per_hour`` on average.
    "idle": {"level": 0.08, "burst": 0.40, "bursts_per_hour": 4.0, "burst_length": 60.0,
             "noise": 0.005},
}

_FRACTIONS = {"level", "peak", "start", "end", "low", "high", "burst", "noise"}

#: The keys of a trace workload (``kind = "trace"``): a recorded working set.
TRACE_KEYS = {"kind", "file", "format", "offset"}


@dataclass(frozen=True)
class WorkloadSpec:
    """A guest's working set over time: a kind and its parameters (all filled in).

    A ``trace`` workload carries its parsed trace; its only parameter is
    ``offset``, the seconds of the trace skipped before time 0.
    """

    kind: str
    params: Mapping[str, float] = field(default_factory=dict)
    trace: Trace | None = None


@dataclass(frozen=True)
class GuestSpec:
    """One simulated guest.

    The defaults are assumed unless said otherwise; a scenario sets them.
    """

    name: str
    memory_mib: int                      # maximum memory (balloon_max)
    workload: WorkloadSpec
    min_guarantee_mib: int = 0           # <memtune><min_guarantee> (balloon_min)
    # Share of its resident memory KSM can merge.  Assumed; the e2e test's
    # 3 idle busybox guests of 512 MiB had 3.5 % merged (13600 pages).
    shareable: float = 0.10
    swap_mib: int = 1024                 # the guest's own swap space
    cache_share: float = 0.30            # file data it would cache, share of max memory
    initial_cache_share: float = 0.05    # page cache at the start, share of max memory
    io_mib_s: float = 8.0                # how fast its page cache grows (file reads)
    uuid: str | None = None              # None: derived from the name
    # False: its balloon driver reported once, at boot, and then stopped
    # answering (hung, unloaded): its statistics age without end and
    # balloon targets do nothing.  What MemTune's limits are for.
    balloon_responds: bool = True
    # A virtio-mem device of this size, part of memory_mib (0: none): the
    # guest boots with the rest and is sized by the device.
    virtio_mem_mib: int = 0


@dataclass(frozen=True)
class Scenario:
    """A host, its guests and how the simulation runs.

    Where the defaults come from: "measured" ones by the e2e tests on real
    QEMU guests (TCG, tests/e2e/test_real_guests.py, which print them),
    "kernel" ones are Linux's defaults, the rest are assumed.
    """

    name: str
    host_memory_mib: int
    guests: tuple[GuestSpec, ...]
    description: str = ""
    seed: int = 1
    duration: float = 3600.0             # simulated seconds the scenario is meant to run
    host_overhead_mib: int = 1024        # the host's own kernel and services (assumed)
    host_swap_mib: int = 4096            # assumed
    host_cache_mib: int = 512            # the host's page cache, at most (assumed)
    cpu_count: int = 8                   # assumed
    step: float = 0.5                    # wall-clock mode: real seconds between advances
    speed: float = 1.0                   # wall-clock mode: simulated seconds per real second
    max_substep: float = 1.0             # the model never integrates more at once
    # How fast a balloon inflates while the guest has free memory or cache
    # to give.  Measured: 128 MiB (512 -> 384 MiB) in 116 ms to `actual`,
    # about 1100 MiB/s, on TCG (KVM is faster; rounded down).
    balloon_rate_mib_s: float = 1024.0
    # How fast a balloon deflates.  Measured: 128 MiB back in 59 ms, about
    # 2170 MiB/s, on TCG (rounded down).
    balloon_deflate_rate_mib_s: float = 2048.0
    # How fast a guest can swap its working set out when a balloon takes
    # more than its free memory and cache.  Assumed.
    guest_swap_rate_mib_s: float = 64.0
    # How often guests refresh their balloon statistics: the period momd
    # sets with virDomainSetMemoryStatsPeriod (LibvirtHypervisor's stats_period).
    stats_period: float = 5.0
    qemu_overhead_mib: int = 32          # per guest, beside guest RAM on the host (assumed)
    ksm_run: int = 0                     # kernel: ksmd starts stopped
    ksm_pages_to_scan: int = 100         # kernel default (mm/ksm.c)
    ksm_sleep_millisecs: int = 20        # kernel default (mm/ksm.c)
    ksm_merge_across_nodes: int = 1      # kernel default


# -- checking values ------------------------------------------------------------


def _where(context: str, key: str) -> str:
    return f"{context}: {key}" if context else key


def _number(value: Any, key: str, context: str, *, minimum: float | None = None,
            maximum: float | None = None, positive: bool = False,
            integer: bool = False) -> float:
    if isinstance(value, str):
        try:
            value = float(value) if not integer else _parse_int(value)
        except ValueError:
            raise ValueError(f"{_where(context, key)} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise ValueError(f"{_where(context, key)} must be a number, got {value!r}")
    if integer and not float(value).is_integer():
        raise ValueError(f"{_where(context, key)} must be a whole number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{_where(context, key)} must be above 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{_where(context, key)} must be at least {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{_where(context, key)} must be at most {maximum}, got {value!r}")
    return int(value) if integer else float(value)


def _parse_int(text: str) -> int:
    number = float(text)
    if not number.is_integer():
        raise ValueError(text)
    return int(number)


def _fraction(value: Any, key: str, context: str) -> float:
    return _number(value, key, context, minimum=0.0, maximum=1.0)


def _flag(value: Any, key: str, context: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{_where(context, key)} must be true or false, got {value!r}")
    return value


def _text(value: Any, key: str, context: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{_where(context, key)} must be a non-empty string, got {value!r}")
    return value


def _unknown(table: Mapping[str, Any], known: set[str], context: str) -> None:
    extra = sorted(set(table) - known)
    if extra:
        raise ValueError(f"{context}: unknown key {extra[0]!r} "
                         f"(known: {', '.join(sorted(known))})")


def workload(kind: str, params: Mapping[str, Any] | None = None, *,
             context: str = "workload") -> WorkloadSpec:
    """A checked WorkloadSpec: ``kind`` and its parameters over the defaults."""
    if kind == "trace":
        raise ValueError(f"{context}: a trace workload needs a file "
                         f"(workload = {{ kind = \"trace\", file = \"PATH\" }})")
    if not isinstance(kind, str) or kind not in WORKLOAD_PARAMS:
        raise ValueError(f"{context}: kind must be one of {', '.join(WORKLOAD_PARAMS)}, "
                         f"trace, got {kind!r}")
    defaults = WORKLOAD_PARAMS[kind]
    params = dict(params or {})
    _unknown(params, set(defaults), f"{context} ({kind})")
    merged: dict[str, float] = {}
    for key, default in defaults.items():
        value = params.get(key, default)
        if key in _FRACTIONS:
            merged[key] = _fraction(value, key, context)
        elif key in ("length", "period", "burst_length"):
            merged[key] = _number(value, key, context, positive=True)
        else:
            merged[key] = _number(value, key, context, minimum=0.0)
    return WorkloadSpec(kind, merged)


def trace_workload(raw: Mapping[str, Any], *, base_dir: Path | None = None,
                   context: str = "workload") -> WorkloadSpec:
    """A checked trace WorkloadSpec from its table (``file`` relative to ``base_dir``)."""
    _unknown(raw, TRACE_KEYS, f"{context} (trace)")
    file = Path(_text(raw.get("file"), "file", context))
    if base_dir is not None and not file.is_absolute():
        file = base_dir / file
    fmt = raw.get("format", "gwa")
    if fmt not in TRACE_FORMATS:
        raise ValueError(f"{_where(context, 'format')} must be one of "
                         f"{', '.join(TRACE_FORMATS)}, got {fmt!r}")
    offset = _number(raw.get("offset", 0.0), "offset", context, minimum=0.0)
    return WorkloadSpec("trace", {"offset": offset}, trace=load_trace(file, fmt))


# -- the generated scenario (URI parameters and the default) ------------------


def generated(*, guests: int = 8, overcommit: float = 1.5, seed: int = 1,
              guest_mib: int = 4096, host_mib: int | None = None,
              workload_kind: str | None = None, **settings: Any) -> Scenario:
    """``guests`` guests of ``guest_mib``, their maxima ``overcommit`` times the host.

    The workloads are a mix: the first guest's load spikes after 5 s (and
    every 15 minutes), the others are steady, daily, mostly idle or
    ramping, their levels varied a little by ``seed``.  ``workload_kind``
    gives every guest that kind instead (with its default parameters).
    ``settings`` are further Scenario fields (step, speed, duration...).
    """
    guests = int(_number(guests, "guests", "", integer=True, minimum=1, maximum=10000))
    overcommit = _number(overcommit, "overcommit", "", positive=True)
    guest_mib = int(_number(guest_mib, "guest_mib", "", integer=True, minimum=256))
    rng = random.Random(f"mom-sim-generated/{seed}")
    specs = []
    for i in range(guests):
        jitter = rng.uniform(-0.05, 0.05)
        if workload_kind is not None:
            load = workload(workload_kind, context="workload")
        elif i == 0:
            load = workload("spike", {"level": 0.30, "peak": 0.85, "at": 5.0,
                                      "length": 300.0, "every": 900.0})
        else:
            load = _mix(i, jitter)
        specs.append(GuestSpec(name=f"sim-guest-{i + 1:02d}", memory_mib=guest_mib,
                               workload=load,
                               shareable=round(0.10 + abs(jitter), 3),
                               initial_cache_share=0.12,
                               min_guarantee_mib=guest_mib // 8 if i % 4 == 3 else 0))
    if host_mib is None:
        host_mib = host_mib_for(guests * guest_mib, overcommit, Scenario.host_overhead_mib)
    else:
        host_mib = int(_number(host_mib, "host_mib", "", integer=True, minimum=256))
    ratio = guests * guest_mib / max(1, host_mib - Scenario.host_overhead_mib)
    description = (f"{guests} guests of {guest_mib} MiB on a {host_mib} MiB host "
                   f"({ratio:.2f}x overcommitted)")
    return _with_settings(Scenario(name="generated", host_memory_mib=host_mib,
                                   guests=tuple(specs), seed=int(seed),
                                   description=description), settings, "")


def from_traces(directory: str | Path, *, guests: int = 8, overcommit: float = 1.5,
                seed: int = 1, **settings: Any) -> Scenario:
    """``guests`` guests replaying GWA traces of ``directory`` (its ``*.csv`` files).

    The files are shuffled by ``seed`` and taken in turn (again from the
    first once all are used).  Each guest's maximum memory is its trace's
    provisioned memory; the host has their sum divided by ``overcommit``
    plus the host's own overhead, so that ``overcommit`` is the ratio of
    the guests' memory to what the host has for them.  ``duration``
    defaults to the shortest trace replayed.
    """
    guests = int(_number(guests, "guests", "", integer=True, minimum=1, maximum=10000))
    overcommit = _number(overcommit, "overcommit", "", positive=True)
    directory = Path(directory)
    try:
        files = sorted(p for p in directory.iterdir() if p.suffix == ".csv" and p.is_file())
    except OSError as e:
        raise ValueError(f"traces {directory}: cannot list it: {e.strerror or e}") from None
    if not files:
        raise ValueError(f"traces {directory}: no trace files (*.csv) in it")
    rng = random.Random(f"mom-sim-traces/{seed}")
    order = list(files)
    rng.shuffle(order)
    specs = []
    for i in range(guests):
        path = order[i % len(order)]
        load = WorkloadSpec("trace", {"offset": 0.0}, trace=load_trace(path, "gwa"))
        assert load.trace is not None
        memory = max(256, math.ceil(load.trace.provisioned_kib / 1024))
        specs.append(GuestSpec(name=f"trace-{i + 1:02d}-{path.stem}", memory_mib=memory,
                               workload=load))
    total = sum(g.memory_mib for g in specs)
    host_mib = host_mib_for(total, overcommit, Scenario.host_overhead_mib)
    shortest = min(g.workload.trace.duration for g in specs if g.workload.trace)
    if shortest <= 0:
        raise ValueError(f"traces {directory}: a trace has a single sample")
    settings = {"duration": shortest, **settings}
    description = (f"{guests} guests replaying traces of {directory} "
                   f"({total} MiB) on a {host_mib} MiB host ({overcommit:g}x overcommitted)")
    return _with_settings(Scenario(name=f"traces-{directory.name}", host_memory_mib=host_mib,
                                   guests=tuple(specs), seed=int(seed),
                                   description=description), settings, "")


def _mix(i: int, jitter: float) -> WorkloadSpec:
    kind = ("steady", "diurnal", "idle", "ramp", "steady", "diurnal", "idle")[(i - 1) % 7]
    if kind == "steady":
        return workload("steady", {"level": 0.40 + jitter})
    if kind == "diurnal":
        return workload("diurnal", {"low": 0.20 + jitter, "high": 0.55 + jitter,
                                    "period": 1800.0, "phase": (i % 3) / 3})
    if kind == "idle":
        return workload("idle", {"level": 0.08, "burst": 0.45 + jitter})
    return workload("ramp", {"start": 0.20, "end": 0.60 + jitter, "length": 1200.0})


def default_scenario() -> Scenario:
    """``make run``: 8 guests, 1.5x overcommitted; one spikes after 5 s.

    The host starts about 25% free; the spike and the guests' growing page
    caches take it below the balloon policy's pressure level (20%) within
    seconds, so that the first balloons move within the first minute (with
    make run's intervals, within about 15 s).
    """
    return replace(generated(guests=8, overcommit=1.5, seed=1), name="default")


def host_mib_for(guests_mib: float, ratio: float, overhead_mib: int) -> int:
    """The host memory (MiB) of guests holding ``guests_mib`` at most,
    ``ratio`` times overcommitted: ``ratio`` is the ratio of the guests'
    memory to what the host has for them, its own overhead aside.  The one
    meaning of "overcommit" in scenario files, URIs and the safe-overcommit
    search alike."""
    return math.ceil(guests_mib / ratio) + overhead_mib


def with_overcommit(scenario: Scenario, ratio: float) -> Scenario:
    """``scenario`` on a host sized for ``ratio``: only the host's memory changes.

    The host gets the sum of the guests' maximum memory divided by
    ``ratio``, plus its own overhead (``host_overhead_mib``): ``ratio`` is
    the ratio of the guests' memory to the memory the host has for them.
    Guests, workloads, swap, KSM and settings stay as they are.
    """
    ratio = _number(ratio, "overcommit", "", positive=True)
    guests_mib = sum(g.memory_mib for g in scenario.guests)
    host_mib = host_mib_for(guests_mib, ratio, scenario.host_overhead_mib)
    return replace(scenario, host_memory_mib=host_mib,
                   description=f"{scenario.description} (host sized for {ratio:g}x: "
                               f"{host_mib} MiB)".lstrip())


# -- settings shared by URIs and files ------------------------------------------

#: Scenario fields a [simulation] table (or, some of them, a URI) may set.
_SETTINGS: dict[str, dict[str, Any]] = {
    "step": {"positive": True},
    "speed": {"positive": True},
    "duration": {"positive": True},
    "max_substep": {"positive": True},
    "balloon_rate_mib_s": {"positive": True},
    "balloon_deflate_rate_mib_s": {"positive": True},
    "guest_swap_rate_mib_s": {"positive": True},
    "stats_period": {"positive": True},
    "qemu_overhead_mib": {"minimum": 0, "integer": True},
}


def _with_settings(scenario: Scenario, settings: Mapping[str, Any], context: str) -> Scenario:
    _unknown(settings, set(_SETTINGS), context or "simulation settings")
    checked = {key: _number(value, key, context, **_SETTINGS[key])
               for key, value in settings.items()}
    return replace(scenario, **checked)


# -- TOML files -----------------------------------------------------------------

_TOP_KEYS = {"name", "description", "seed", "duration", "host", "ksm", "simulation",
             "guest_defaults", "guest"}
_HOST_KEYS = {"memory_mib", "overcommit", "overhead_mib", "swap_mib", "cache_mib",
              "cpu_count"}
_KSM_KEYS = set(KSM_TUNABLES)   # a scenario sets the tunables, by file name
_GUEST_KEYS = {"name", "count", "memory_mib", "min_guarantee_mib", "shareable", "swap_mib",
               "cache_share", "initial_cache_share", "io_mib_s", "uuid", "workload",
               "balloon_responds", "virtio_mem_mib"}


def load_scenario(path: str | Path) -> Scenario:
    """Read a TOML scenario file; ValueError (naming the file and key) if unfit."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ValueError(f"cannot read scenario {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"scenario {path} is not valid TOML: {e}") from None
    return parse_scenario(data, context=str(path), default_name=path.stem,
                          base_dir=path.parent)


def parse_scenario(data: Mapping[str, Any], *, context: str = "scenario",
                   default_name: str = "scenario", base_dir: Path | None = None) -> Scenario:
    """A Scenario from the tables of a TOML document (see ``load_scenario``).

    Trace files are relative to ``base_dir`` (the scenario file's directory).
    """
    _unknown(data, _TOP_KEYS, context)
    name = _text(data.get("name", default_name), "name", context)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"{context}: description must be a string")
    seed = _number(data.get("seed", 1), "seed", context, integer=True)

    defaults = _table(data, "guest_defaults", context)
    _unknown(defaults, _GUEST_KEYS - {"name", "count", "uuid"}, f"{context} [guest_defaults]")
    raw_guests = data.get("guest", [])
    if not isinstance(raw_guests, list) or not raw_guests \
            or not all(isinstance(g, dict) for g in raw_guests):
        raise ValueError(f"{context}: guest must be an array of tables ([[guest]]) "
                         f"with at least one guest")
    guests: list[GuestSpec] = []
    for index, raw in enumerate(raw_guests):
        guests.extend(_guests(raw, defaults, f"{context} [[guest]] #{index + 1}", base_dir))
    names = [g.name for g in guests]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise ValueError(f"{context}: guest name {duplicate!r} is used twice")

    host = _table(data, "host", context)
    where = f"{context} [host]"
    _unknown(host, _HOST_KEYS, where)
    if ("memory_mib" in host) == ("overcommit" in host):
        raise ValueError(f"{where}: give exactly one of memory_mib and overcommit")
    overhead = _number(host.get("overhead_mib", 1024), "overhead_mib", where,
                       integer=True, minimum=0)
    if "memory_mib" in host:
        memory = _number(host["memory_mib"], "memory_mib", where, integer=True, minimum=256)
    else:
        ratio = _number(host["overcommit"], "overcommit", where, positive=True)
        memory = host_mib_for(sum(g.memory_mib for g in guests), ratio, overhead)
    fields: dict[str, Any] = {
        "host_memory_mib": int(memory),
        "host_overhead_mib": overhead,
        "host_swap_mib": _number(host.get("swap_mib", 4096), "swap_mib", where,
                                 integer=True, minimum=0),
        "host_cache_mib": _number(host.get("cache_mib", 512), "cache_mib", where,
                                  integer=True, minimum=0),
        "cpu_count": _number(host.get("cpu_count", 8), "cpu_count", where,
                             integer=True, minimum=1),
    }
    if fields["host_overhead_mib"] >= fields["host_memory_mib"]:
        raise ValueError(f"{where}: overhead_mib must be below the host's memory "
                         f"({fields['host_memory_mib']} MiB)")

    ksm = _table(data, "ksm", context)
    where = f"{context} [ksm]"
    _unknown(ksm, _KSM_KEYS, where)
    if "run" in ksm:
        fields["ksm_run"] = _choice(ksm["run"], "run", where, (0, 1, 2))
    if "merge_across_nodes" in ksm:
        fields["ksm_merge_across_nodes"] = _choice(ksm["merge_across_nodes"],
                                                   "merge_across_nodes", where, (0, 1))
    for key in ("pages_to_scan", "sleep_millisecs"):
        if key in ksm:
            fields[f"ksm_{key}"] = _number(ksm[key], key, where, integer=True,
                                           minimum=0, maximum=2**32 - 1)

    scenario = Scenario(name=name, description=description, seed=int(seed),
                        guests=tuple(guests), **fields)
    settings = dict(_table(data, "simulation", context))
    if "duration" in data:
        settings["duration"] = data["duration"]
    return _with_settings(scenario, settings, f"{context} [simulation]")


def _table(data: Mapping[str, Any], key: str, context: str) -> Mapping[str, Any]:
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise ValueError(f"{context}: {key} must be a table ([{key}])")
    return table


def _choice(value: Any, key: str, context: str, allowed: tuple[int, ...]) -> int:
    number = _number(value, key, context, integer=True)
    if number not in allowed:
        raise ValueError(f"{_where(context, key)} must be one of "
                         f"{', '.join(map(str, allowed))}, got {value!r}")
    return int(number)


def _guests(raw: Mapping[str, Any], defaults: Mapping[str, Any],
            context: str, base_dir: Path | None = None) -> list[GuestSpec]:
    _unknown(raw, _GUEST_KEYS, context)
    merged = {**defaults, **raw}
    name = _text(merged.get("name", ""), "name", context)
    count = _number(merged.get("count", 1), "count", context, integer=True, minimum=1,
                    maximum=10000)
    if count > 1 and "uuid" in merged:
        raise ValueError(f"{context}: uuid cannot be given with count > 1")
    raw_load = merged.get("workload", {"kind": "steady"})
    if not isinstance(raw_load, dict) or "kind" not in raw_load:
        raise ValueError(f"{context}: workload must be a table with a kind "
                         f"(workload = {{ kind = \"steady\", level = 0.4 }})")
    if raw_load["kind"] == "trace":
        load = trace_workload(raw_load, base_dir=base_dir, context=f"{context} workload")
    else:
        load_params = {k: v for k, v in raw_load.items() if k != "kind"}
        load = workload(raw_load["kind"], load_params, context=f"{context} workload")
    if "memory_mib" not in merged:
        # A GWA trace says how much memory its VM had.
        if load.trace is None or load.trace.provisioned_kib <= 0:
            why = "" if load.trace is None else "; a csv trace does not give it"
            raise ValueError(f"{context}: memory_mib is required "
                             f"(here or in [guest_defaults]{why})")
        merged["memory_mib"] = max(256, math.ceil(load.trace.provisioned_kib / 1024))
    memory = int(_number(merged["memory_mib"], "memory_mib", context, integer=True,
                         minimum=256))
    guarantee = int(_number(merged.get("min_guarantee_mib", 0), "min_guarantee_mib",
                            context, integer=True, minimum=0))
    if guarantee > memory:
        raise ValueError(f"{context}: min_guarantee_mib ({guarantee}) is above "
                         f"memory_mib ({memory})")
    device = int(_number(merged.get("virtio_mem_mib", 0), "virtio_mem_mib", context,
                         integer=True, minimum=0))
    if device > memory - 128:
        raise ValueError(f"{context}: virtio_mem_mib ({device}) leaves less than 128 MiB "
                         f"of memory_mib ({memory}) to boot with")
    common = dict(
        memory_mib=memory, workload=load, min_guarantee_mib=guarantee, virtio_mem_mib=device,
        shareable=_fraction(merged.get("shareable", 0.10), "shareable", context),
        swap_mib=int(_number(merged.get("swap_mib", 1024), "swap_mib", context,
                             integer=True, minimum=0)),
        cache_share=_fraction(merged.get("cache_share", 0.30), "cache_share", context),
        initial_cache_share=_fraction(merged.get("initial_cache_share", 0.05),
                                      "initial_cache_share", context),
        io_mib_s=_number(merged.get("io_mib_s", 8.0), "io_mib_s", context, minimum=0.0),
        balloon_responds=_flag(merged.get("balloon_responds", True), "balloon_responds",
                               context),
    )
    if count == 1:
        uuid = merged.get("uuid")
        if uuid is not None:
            uuid = _uuid(uuid, context)
        return [GuestSpec(name=name, uuid=uuid, **common)]
    return [GuestSpec(name=f"{name}-{i + 1}", **common) for i in range(int(count))]


def _uuid(value: Any, context: str) -> str:
    import uuid as uuid_module
    try:
        return str(uuid_module.UUID(str(value)))
    except ValueError:
        raise ValueError(f"{context}: uuid {value!r} is not a UUID") from None


# -- URIs -----------------------------------------------------------------------

_GENERATED_KEYS = {"guests", "overcommit", "seed", "guest_mib", "host_mib", "workload",
                   "traces"}
_URI_SETTINGS = {"step", "speed", "duration"}


def parse_uri(uri: str) -> Scenario:
    """The Scenario a ``sim://`` URI names (see the module's documentation)."""
    parts = urlsplit(uri.strip())
    if parts.scheme != "sim":
        raise ValueError(f"not a simulator URI (sim:///...): {uri!r}")
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"simulator URI {uri!r}: no host part is allowed "
                         f"(sim:///?... or sim:///path/to/scenario.toml)")
    if parts.fragment:
        raise ValueError(f"simulator URI {uri!r}: no fragment (#...) is allowed")
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key in query:
            raise ValueError(f"simulator URI: {key} is given twice")
        if value == "":
            raise ValueError(f"simulator URI: {key} has no value")
        query[key] = value
    _unknown(query, _GENERATED_KEYS | _URI_SETTINGS, "simulator URI")
    settings = {k: v for k, v in query.items() if k in _URI_SETTINGS}
    path = unquote(parts.path)
    if path in ("", "/") and "traces" in query:
        extra = sorted(set(query) & {"guest_mib", "host_mib", "workload"})
        if extra:
            raise ValueError(f"simulator URI: {extra[0]} cannot be used with traces "
                             f"(only guests, overcommit, seed, {', '.join(sorted(_URI_SETTINGS))})")
        trace_args: dict[str, Any] = {
            key: _number(query[key], key, "simulator URI", integer=True)
            for key in ("guests", "seed") if key in query}
        if "overcommit" in query:
            trace_args["overcommit"] = query["overcommit"]
        return from_traces(query["traces"], **trace_args, **settings)
    if path in ("", "/"):
        kwargs: dict[str, Any] = {}
        for key in ("guests", "guest_mib", "host_mib", "seed"):
            if key in query:
                kwargs[key] = _number(query[key], key, "simulator URI", integer=True)
        if "overcommit" in query:
            if "host_mib" in query:
                raise ValueError("simulator URI: give overcommit or host_mib, not both")
            kwargs["overcommit"] = query["overcommit"]
        if "workload" in query:
            kwargs["workload_kind"] = query["workload"]
            workload(query["workload"], context="simulator URI: workload")
        if not kwargs:
            scenario = default_scenario()
            return _with_settings(scenario, settings, "simulator URI")
        return generated(**kwargs, **settings)
    generated_only = sorted(set(query) & (_GENERATED_KEYS - {"seed"}))
    if generated_only:
        raise ValueError(f"simulator URI: {generated_only[0]} cannot be used with a "
                         f"scenario file (only seed, {', '.join(sorted(_URI_SETTINGS))})")
    scenario = load_scenario(path)
    if "seed" in query:
        scenario = replace(scenario, seed=int(_number(query["seed"], "seed",
                                                      "simulator URI", integer=True)))
    return _with_settings(scenario, settings, "simulator URI")
