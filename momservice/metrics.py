"""The metrics file: momd's state in Prometheus' text format, for fleets.

With ``metrics-file`` set (``[main]`` or ``--metrics-file``), momd rewrites
that file after every collection and evaluation; node_exporter's textfile
collector picks it up, and Prometheus scrapes it with the host's other
metrics.  Two halves: :func:`format_metrics`, a pure function from a
:class:`MetricsState` to the text, and :class:`MetricsFileWriter`, the engine
observer that takes the state, counts evaluations and writes the file
atomically (a temporary file in the same directory, renamed over it).

Names are ``mom_*`` in base units: statistics in KiB become ``_bytes``
(times 1024), percentages ``_ratio`` (0..1), milliseconds ``_seconds``;
counters end in ``_total``.  The units come from the field catalogue
(:mod:`momservice.fields`); this module only names the metrics.  A
statistic without a value (nil) is left out, never written as 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine.core import Engine, EngineObserver, Evaluation
from .fields import (GUEST_STATISTICS, HOST_STATISTICS, HOST_TIME, KIB, MICROSECONDS,
                     MILLISECONDS, PERCENT, SECONDS, Unit)

log = logging.getLogger(__name__)

GAUGE = "gauge"
COUNTER = "counter"

#: Each statistic's unit, from the field catalogue, by kind of entity.
_UNITS = {"host": {f.name: f.unit for f in HOST_STATISTICS},
          "guest": {f.name: f.unit for f in GUEST_STATISTICS}}

#: Statistics that only grow while their source lives (totals since the
#: guest, its QEMU process or ksmd started), by kind of entity: counters.
CUMULATIVE_FIELDS: dict[str, frozenset[str]] = {
    "host": frozenset({"ksm_full_scans"}),
    "guest": frozenset({"swap_in", "swap_out", "major_fault", "minor_fault",
                        "host_major_faults", "host_minor_faults"}),
}

#: Unit -> (name suffix, factor to the base unit).  Units not listed (pages,
#: counts, settings) are plain numbers already.
_BASE_UNITS: dict[Unit, tuple[str, float]] = {
    KIB: ("_bytes", 1024),
    PERCENT: ("_ratio", 0.01),
    MILLISECONDS: ("_seconds", 0.001),
    MICROSECONDS: ("_seconds", 0.000001),
    SECONDS: ("_seconds", 1),
}


@dataclass(frozen=True)
class Metric:
    """One metric family: name, type, help text and where its value comes from.

    ``field`` is the statistic it reports (None for the engine's own
    figures), ``scale`` the factor from the statistic's unit to the metric's.
    """

    name: str
    type: str
    help: str
    field: str | None = None
    scale: float = 1


def _statistic(kind: str, field: str, stem: str, help: str) -> Metric:
    """The metric of a statistic: suffix and scale from its unit, counter if it only grows."""
    unit = _UNITS[kind][field]
    suffix, scale = _BASE_UNITS.get(unit, ("", 1))
    cumulative = field in CUMULATIVE_FIELDS[kind]
    return Metric(f"mom_{stem}{suffix}{'_total' if cumulative else ''}",
                  COUNTER if cumulative else GAUGE, help, field, scale)


#: The host's statistics.
HOST_METRICS: tuple[Metric, ...] = tuple(_statistic("host", *row) for row in (
    ("mem_available", "host_memory_total", "Memory of the host (MemTotal)."),
    ("mem_free", "host_memory_free",
     "Memory of the host that is free or holds buffers and page cache (MoM's mem_free)."),
    ("mem_unused", "host_memory_unused", "Memory of the host that is unused (MemFree)."),
    ("anon_pages", "host_memory_anon", "Anonymous memory of the host (AnonPages)."),
    ("swap_total", "host_swap_total", "Swap space of the host."),
    ("swap_usage", "host_swap_used", "Swap space of the host in use."),
    ("cpu_count", "host_cpus", "CPUs of the host."),
    ("mem_pressure_some", "host_memory_pressure_some",
     "Share of time some tasks of the host waited for memory, over 10 s (PSI some avg10)."),
    ("mem_pressure_full", "host_memory_pressure_full",
     "Share of time all tasks of the host waited for memory, over 10 s (PSI full avg10)."),
    ("ksm_run", "ksm_run", "KSM's run setting: 0 stopped, 1 merging, 2 unmerging."),
    ("ksm_pages_to_scan", "ksm_pages_to_scan", "Pages ksmd scans each time it wakes."),
    ("ksm_sleep_millisecs", "ksm_sleep", "Time ksmd sleeps between scans."),
    ("ksm_merge_across_nodes", "ksm_merge_across_nodes",
     "1 when KSM merges pages of different NUMA nodes."),
    ("ksm_pages_shared", "ksm_pages_shared", "KSM pages in use, each shared by several."),
    ("ksm_pages_sharing", "ksm_pages_sharing",
     "Pages merged into KSM's shared pages: what KSM saves, in pages."),
    ("ksm_pages_unshared", "ksm_pages_unshared",
     "Pages KSM checks that are unique so far."),
    ("ksm_pages_volatile", "ksm_pages_volatile",
     "Pages that change too fast for KSM to merge."),
    ("ksm_full_scans", "ksm_full_scans", "Full scans of the mergeable memory by ksmd."),
    ("ksm_shareable", "ksm_shareable",
     "Resident memory of the guests' QEMU processes, which KSM may merge."),
    ("ksmd_cpu_usage", "ksmd_cpu_usage",
     "CPU time ksmd used since the previous sample, as a share of one CPU."),
))

#: Host statistics with no metric, and why.
HOST_FIELDS_LEFT_OUT: dict[str, str] = {
    "swap_in": "pages since the previous sample: neither a gauge nor a counter",
    "swap_out": "pages since the previous sample: neither a gauge nor a counter",
    **{f.name: "the wall clock: every sample has its own timestamp" for f in HOST_TIME},
}

#: Guest statistics that are no number, each with the reason it has no metric.
GUEST_FIELDS_LEFT_OUT: dict[str, str] = {
    "io_tune": "a list of disks, each with limits of its own: not one number",
    "io_tune_current": "a list of disks, each with limits of its own: not one number",
}

#: Each guest's statistics, labelled ``guest`` (its name) and ``uuid``.
GUEST_METRICS: tuple[Metric, ...] = tuple(_statistic("guest", *row) for row in (
    ("balloon_cur", "guest_balloon_current", "Memory the balloon leaves the guest."),
    ("balloon_max", "guest_balloon_maximum", "Maximum memory of the guest."),
    ("balloon_min", "guest_balloon_minimum", "Memory guaranteed to the guest."),
    ("mem_available", "guest_memory_available",
     "Memory the guest sees, as its balloon driver (or guest agent) reports."),
    ("mem_unused", "guest_memory_unused", "Memory the guest leaves unused."),
    ("mem_usable", "guest_memory_usable", "Memory the guest could use without swapping."),
    ("disk_caches", "guest_memory_disk_caches", "Memory of the guest holding disk caches."),
    ("swap_total", "guest_swap_total", "Swap space of the guest."),
    ("swap_usage", "guest_swap_used", "Swap space of the guest in use."),
    ("swap_in", "guest_swap_in", "Data the guest read from swap since it booted."),
    ("swap_out", "guest_swap_out", "Data the guest wrote to swap since it booted."),
    ("major_fault", "guest_major_faults", "Major page faults in the guest since it booted."),
    ("minor_fault", "guest_minor_faults", "Minor page faults in the guest since it booted."),
    ("rss", "guest_rss", "Resident memory of the guest's QEMU process on the host."),
    ("mem_soft_limit", "guest_memory_soft_limit",
     "Soft memory limit of the guest's QEMU process (absent while unlimited)."),
    ("mem_hard_limit", "guest_memory_hard_limit",
     "Hard memory limit of the guest's QEMU process (absent while unlimited)."),
    ("mem_swap_hard_limit", "guest_memory_swap_hard_limit",
     "Memory plus swap limit of the guest's QEMU process (absent while unlimited)."),
    ("host_major_faults", "guest_host_major_faults",
     "Major page faults of the guest's QEMU process on the host."),
    ("host_minor_faults", "guest_host_minor_faults",
     "Minor page faults of the guest's QEMU process on the host."),
    ("stats_age", "guest_stats_age", "Time since the guest last reported its statistics."),
    ("balloon_autodeflate", "guest_balloon_autodeflate",
     "1 if the guest deflates its balloon itself when out of memory, else 0."),
    ("balloon_free_page_reporting", "guest_balloon_free_page_reporting",
     "1 if the guest returns the pages it frees to the host itself, else 0."),
    ("virtio_mem_max", "guest_virtio_mem_maximum", "Size of the guest's virtio-mem device."),
    ("virtio_mem_block", "guest_virtio_mem_block", "Block size of the guest's virtio-mem device."),
    ("virtio_mem_requested", "guest_virtio_mem_requested",
     "Memory the host asks the guest's virtio-mem device to plug."),
    ("virtio_mem_current", "guest_virtio_mem_current",
     "Memory the guest's virtio-mem device has plugged."),
    ("vcpu_quota", "guest_vcpu_quota",
     "CPU time each vCPU of the guest may use per period; negative: unlimited."),
    ("vcpu_period", "guest_vcpu_period", "Period of the guest's vCPU quota."),
    ("vcpu_user_limit", "guest_vcpu_user_limit",
     "CPU limit set for the guest, as a share of the host's CPU time."),
    ("vcpu_count", "guest_vcpus", "vCPUs of the guest."),
))

#: Not a statistic: the balloon target momd last sent for the guest.
BALLOON_TARGET = Metric("mom_guest_balloon_target_bytes", GAUGE,
                        "Balloon target momd last set for the guest.", scale=1024)

#: momd's own figures.
GUESTS = Metric("mom_guests", GAUGE, "Guests momd manages.")
CONNECTED = Metric("mom_hypervisor_connected", GAUGE,
                   "1 while momd is connected to the hypervisor.")
EVALUATIONS = Metric("mom_policy_evaluations_total", COUNTER,
                     "Evaluations of the policies since momd started.")
POLICY_ERRORS = Metric("mom_policy_errors_total", COUNTER,
                       "Policy errors since momd started: one per failed evaluation, "
                       "one per guest whose controls an error skipped.")
BALLOON_OPERATIONS = Metric("mom_balloon_operations_total", COUNTER,
                            "Balloon targets momd sent to the hypervisor since it started.")
LAST_EVALUATION = Metric("mom_policy_last_evaluation_timestamp_seconds", GAUGE,
                         "When the policies were last evaluated, seconds since the epoch.")
LAST_EVALUATION_DURATION = Metric("mom_policy_last_evaluation_duration_seconds", GAUGE,
                                  "How long the last evaluation of the policies took.")
MOMD_METRICS: tuple[Metric, ...] = (GUESTS, CONNECTED, EVALUATIONS, POLICY_ERRORS,
                                    BALLOON_OPERATIONS, LAST_EVALUATION,
                                    LAST_EVALUATION_DURATION)

#: Every metric family the file may hold, in the order written.
ALL_METRICS: tuple[Metric, ...] = (MOMD_METRICS + HOST_METRICS + GUEST_METRICS
                                   + (BALLOON_TARGET,))


@dataclass(frozen=True)
class GuestState:
    """One guest as the metrics see it: its labels, newest sample and balloon target."""

    name: str
    uuid: str
    sample: Mapping[str, Any]
    balloon_target: int | None = None      # KiB; None: momd has set none


@dataclass(frozen=True)
class MetricsState:
    """Everything the metrics file says, taken from the engine at one moment."""

    host: Mapping[str, Any]
    guests: Sequence[GuestState]
    evaluations: int = 0
    policy_errors: int = 0
    balloon_operations: int = 0
    connected: bool = True
    last_evaluation: float | None = None           # seconds since the epoch
    last_evaluation_duration: float | None = None  # seconds


# -- the text format -------------------------------------------------------------


def _number(value: Any, scale: float = 1) -> str | None:
    """A sample value as the format writes it; None for nil or anything not a number."""
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, (int, float)):
        return None
    if isinstance(value, int) and float(scale).is_integer():
        return str(value * int(scale))
    # Dividing by 100 gives 0.1234 for 12.34 percent; multiplying by 0.01
    # would give 0.12340000000000001.
    scaled = float(value) / round(1 / scale) if scale < 1 else float(value) * scale
    if math.isnan(scaled):
        return "NaN"
    if math.isinf(scaled):
        return "+Inf" if scaled > 0 else "-Inf"
    # Whole numbers without ".0"; others as Python's shortest round trip.
    return str(int(scaled)) if scaled.is_integer() and abs(scaled) < 2**63 else repr(scaled)


def escape_label_value(value: str) -> str:
    """A label value for the text format: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _family(metric: Metric, samples: Iterable[tuple[str, Any]]) -> list[str]:
    """HELP, TYPE and one line per (labels, value) with a value."""
    lines = [f"# HELP {metric.name} {_escape_help(metric.help)}",
             f"# TYPE {metric.name} {metric.type}"]
    for labels, value in samples:
        text = _number(value, metric.scale)
        if text is not None:
            lines.append(f"{metric.name}{labels} {text}")
    return lines


def _guest_labels(guest: GuestState) -> str:
    return (f'{{guest="{escape_label_value(guest.name)}",'
            f'uuid="{escape_label_value(guest.uuid)}"}}')


def format_metrics(state: MetricsState) -> str:
    """The Prometheus text exposition of ``state`` (every family, nil values left out)."""
    guests = sorted(state.guests, key=lambda g: (g.name, g.uuid))
    labelled = [(_guest_labels(g), g) for g in guests]
    momd_values = {
        GUESTS: len(guests), CONNECTED: state.connected,
        EVALUATIONS: state.evaluations, POLICY_ERRORS: state.policy_errors,
        BALLOON_OPERATIONS: state.balloon_operations,
        LAST_EVALUATION: state.last_evaluation,
        LAST_EVALUATION_DURATION: state.last_evaluation_duration,
    }
    lines: list[str] = []
    for metric in MOMD_METRICS:
        lines += _family(metric, [("", momd_values[metric])])
    for metric in HOST_METRICS:
        lines += _family(metric, [("", state.host.get(metric.field))])
    for metric in GUEST_METRICS:
        lines += _family(metric, [(labels, g.sample.get(metric.field)) for labels, g in labelled])
    lines += _family(BALLOON_TARGET, [(labels, g.balloon_target) for labels, g in labelled])
    return "\n".join(lines) + "\n"


# -- the writer --------------------------------------------------------------------


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` in one rename: a reader sees the old file or the new.

    The temporary file is in the same directory (a rename does not cross
    file systems) and its name does not end in ``.prom``, so that
    node_exporter never reads a half-written file.  OSError when it fails.
    """
    import tempfile  # here: momd loads it only with a metrics file
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), mode)   # mkstemp makes it 0600
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class MetricsFileWriter(EngineObserver):
    """Keeps the metrics file up to date: rewrites it after every collection
    and evaluation, and counts the evaluations and the policy errors.

    ``balloon`` is the Balloon mechanism (its ``operations`` and
    ``targets``), None when there is none.  On the engine's loop, writes
    asked for in one turn of the loop are made once.  A write that fails
    is logged once, naming the file, until one succeeds again; momd goes
    on either way.
    """

    def __init__(self, engine: Engine, path: Path, balloon: Any | None = None) -> None:
        self.engine = engine
        self.path = Path(path)
        self.balloon = balloon
        self.evaluations = 0
        self.policy_errors = 0
        self._failing = False
        self._pending = False

    def state(self) -> MetricsState:
        """The engine's state now, as the metrics file reports it."""
        targets: Mapping[str, int] = getattr(self.balloon, "targets", {})
        guests = [GuestState(str(entity.name), uuid, entity.latest, targets.get(uuid))
                  for uuid, entity in self.engine.guests.items()]
        last = self.engine.last_evaluation
        return MetricsState(
            host=self.engine.host.latest, guests=guests,
            evaluations=self.evaluations, policy_errors=self.policy_errors,
            balloon_operations=getattr(self.balloon, "operations", 0),
            connected=bool(self.engine.hypervisor.connected),
            last_evaluation=last.started if last is not None else None,
            last_evaluation_duration=last.duration if last is not None else None)

    def write(self) -> bool:
        """Write the file now; False (and one warning until it works again) if that fails."""
        self._pending = False
        try:
            write_atomically(self.path, format_metrics(self.state()))
        except OSError as e:
            if not self._failing:
                log.warning("cannot write the metrics file %s: %s (momd goes on; "
                            "this is not repeated until a write succeeds)", self.path, e)
            self._failing = True
            return False
        if self._failing:
            log.info("the metrics file %s is written again", self.path)
        self._failing = False
        return True

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.write()
            return
        if not self._pending:
            self._pending = True
            loop.call_soon(self.write)

    # -- engine hooks --------------------------------------------------------

    def host_sampled(self) -> None:
        self._schedule()

    def guests_sampled(self) -> None:
        self._schedule()

    def guest_removed(self, uuid: str) -> None:
        self._schedule()

    def evaluated(self, evaluation: Evaluation) -> None:
        self.evaluations += 1
        result = evaluation.result
        self.policy_errors += (1 if result.error is not None else 0) + len(result.guest_errors)
        self._schedule()
