"""``momctl lab``: which policy set to trust, tried on simulated scenarios.

Each scenario runs through the real engine, controllers and policy
evaluation over the simulator (momservice.simulator), faster than real
time, once per policy set; one row per pair.

``--max-overcommit`` finds each policy set's safe overcommit of a
scenario: the scenario is run on hosts sized for 1.0, 1.25, 1.5, ... x
(``with_overcommit``: the host's memory is the guests' maximum memory
divided by the ratio, plus the host's own overhead; nothing else changes)
until a ratio is unsafe or the cap (``OVERCOMMIT_CAP``) is reached.  Safe:
no host swap at all, and guest swap (in and out) under 1 MiB per guest and
simulated hour.  The search stops at the first unsafe ratio: a host that
swaps with more memory rarely stops swapping with less, and every step
costs a whole run.

``--report DIR`` also writes, per scenario, plots (PNG and SVG) of the
runs and ``report.md`` with the table (momservice.simulator.report; it
needs matplotlib, the ``lab`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any, Callable, TextIO

from ..policy import PolicyError, PolicySet
from ..policy_files import find_policy_files, read_policy_texts
from ..simulator import load_scenario, parse_uri
from ..simulator.lab import Lab
from ..simulator.metrics import LabMetrics, LabSeries
from ..simulator.scenario import Scenario, is_sim_uri, with_overcommit
from . import exitcodes
from .formatting import format_table
from .policy_tools import UsageError

_REPO = Path(__file__).resolve().parents[2]
#: The policy sets compared when none is named: no policy, the shipped
#: defaults, MoM's algorithm (the optional shipped set) and Proxmox-style
#: auto-ballooning (from the source tree).
DEFAULT_POLICY_SETS = (("none", _REPO / "benchmarks" / "policies" / "none"),
                       ("defaults", _REPO / "policies"),
                       ("mom", _REPO / "policies" / "mom"),
                       ("proxmox", _REPO / "benchmarks" / "policies" / "proxmox"))

COLUMNS = (("scenario", "SCENARIO"), ("policy", "POLICY"),
           ("host_swap_pages", "HOST SWAP (pages)"), ("guest_swap_pages", "GUEST SWAP (pages)"),
           ("pressure_seconds", "PRESSURE (s)"), ("balloon_ops", "BALLOON OPS"),
           ("reclaimed_mib", "RECLAIMED (MiB)"), ("worst_shortfall_mib", "WORST SHORTFALL (MiB)"))

#: The overcommit search: from 1.0 in steps of 0.25, up to this ratio at most.
OVERCOMMIT_START, OVERCOMMIT_STEP, OVERCOMMIT_CAP = 1.0, 0.25, 8.0
#: Safe: no host swap, and guest swap under this (MiB per guest and simulated hour).
SAFE_GUEST_SWAP_MIB_PER_GUEST_HOUR = 1.0

OVERCOMMIT_COLUMNS = (("scenario", "SCENARIO"), ("policy", "POLICY"),
                      ("safe_overcommit", "SAFE OVERCOMMIT"),
                      ("unsafe_at", "UNSAFE AT"),
                      ("unsafe_host_swap_pages", "HOST SWAP THERE (pages)"),
                      ("unsafe_guest_swap_mib_per_guest_hour",
                       "GUEST SWAP THERE (MiB/guest-h)"))


def add_lab_parser(commands: argparse._SubParsersAction) -> None:
    """Register ``momctl lab``."""
    lab = commands.add_parser(
        "lab", help="compare policy sets on simulated scenarios, faster than real time")
    lab.add_argument("scenarios", nargs="+", metavar="SCENARIO",
                     help="a scenario file (TOML) or a sim:// URI")
    lab.add_argument("--policy-dir", action="append", type=Path, default=[], metavar="DIR",
                     help="a directory of .policy files: one row per scenario, named after "
                          "the directory (repeatable; default: none, defaults, proxmox)")
    lab.add_argument("--duration", type=float, metavar="SECONDS",
                     help="simulated seconds to run (default: each scenario's own)")
    lab.add_argument("--json", action="store_true", help="print the rows as JSON")
    lab.add_argument("--max-overcommit", action="store_true",
                     help="per policy set, the highest overcommit (from 1.0 in steps of "
                          f"{OVERCOMMIT_STEP}, at most {OVERCOMMIT_CAP}) at which the "
                          "scenario runs without host swap and with guest swap under "
                          f"{SAFE_GUEST_SWAP_MIB_PER_GUEST_HOUR:g} MiB per guest-hour; "
                          "the host's memory is scaled, nothing else")
    lab.add_argument("--report", type=Path, metavar="DIR",
                     help="also write plots (PNG, SVG) per scenario and report.md with "
                          "the table to DIR (needs matplotlib: the lab extra)")
    lab.set_defaults(run=run_lab)


def _scenario(text: str) -> tuple[str, Scenario]:
    try:
        if is_sim_uri(text):
            return text, parse_uri(text)
        return Path(text).stem, load_scenario(text)
    except (ValueError, OSError) as e:
        raise UsageError(f"scenario {text}: {e}") from None


def _policy_sets(dirs: list[Path]) -> list[tuple[str, PolicySet]]:
    named = [(d.resolve().name, d) for d in dirs] if dirs else \
        [(n, d) for n, d in DEFAULT_POLICY_SETS if d.is_dir()]
    sets = []
    for name, directory in named:
        if not directory.is_dir():
            raise UsageError(f"--policy-dir {directory}: not a directory")
        try:
            sets.append((name, PolicySet(read_policy_texts(find_policy_files([directory])))))
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"--policy-dir {directory}: {e}") from None
        except PolicyError as e:
            raise UsageError(f"--policy-dir {directory}: {e}") from None
    return sets


async def run_one(scenario: Scenario, policies: PolicySet, duration: float,
                  series: LabSeries | None = None) -> LabMetrics:
    """One scenario under one policy set, through the real engine; its metrics.

    ``series``, when given, takes in the figures over time (for plots).
    """
    metrics = LabMetrics()
    observe: Callable[[Any, float], None] = metrics.observe
    if series is not None:
        def observe(simulation: Any, dt: float) -> None:
            metrics.observe(simulation, dt)
            series.observe(simulation, dt)
    lab = Lab("sim:///", policies, scenario=scenario)
    await lab.start()
    try:
        await lab.run(duration, observe=observe)
    finally:
        await lab.stop()
    metrics.balloon_ops = sum(len(e.applied_balloons) for e in lab.record.evaluations)
    return metrics


def is_safe(metrics: LabMetrics, guests: int) -> bool:
    """No host swap, and guest swap under the limit per guest-hour."""
    return (round(metrics.host_swap_pages) == 0
            and metrics.guest_swap_mib_per_guest_hour(guests)
            < SAFE_GUEST_SWAP_MIB_PER_GUEST_HOUR)


def max_overcommit(scenario: Scenario, policies: PolicySet, duration: float) -> dict:
    """The safe overcommit of ``scenario`` under ``policies`` (see the module doc).

    ``safe_overcommit`` is None when even 1.0 is unsafe; ``unsafe_at`` None
    when the cap was reached safely.
    """
    safe: float | None = None
    ratio = OVERCOMMIT_START
    guests = len(scenario.guests)
    while ratio <= OVERCOMMIT_CAP + 1e-9:
        metrics = asyncio.run(run_one(with_overcommit(scenario, ratio), policies, duration))
        if not is_safe(metrics, guests):
            return {"safe_overcommit": safe, "unsafe_at": ratio,
                    "unsafe_host_swap_pages": round(metrics.host_swap_pages),
                    "unsafe_guest_swap_mib_per_guest_hour":
                        round(metrics.guest_swap_mib_per_guest_hour(guests), 2)}
        safe = ratio
        ratio += OVERCOMMIT_STEP
    return {"safe_overcommit": safe, "unsafe_at": None, "unsafe_host_swap_pages": None,
            "unsafe_guest_swap_mib_per_guest_hour": None}


def _prepare_report(directory: Path) -> None:
    try:
        import matplotlib  # noqa: F401  - the lab extra; checked before any run
    except ImportError:
        raise UsageError("--report needs matplotlib (pip install 'mom[lab]', or "
                         "apt-get install python3-matplotlib)") from None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--report {directory}: {e.strerror or e}") from None


def _table(columns: tuple[tuple[str, str], ...], rows: list[dict]) -> list[str]:
    shown = [[_shown(row[key]) for key, _ in columns] for row in rows]
    return format_table([title for _, title in columns], shown,
                        right=range(2, len(columns)))


def _shown(value: Any) -> Any:
    return "-" if value is None else value


def run_lab(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    scenarios = [_scenario(text) for text in args.scenarios]
    policy_sets = _policy_sets(args.policy_dir)
    if args.report is not None:
        _prepare_report(args.report)
    if args.max_overcommit:
        rows = []
        for label, scenario in scenarios:
            duration = args.duration or scenario.duration
            for name, policies in policy_sets:
                rows.append({"scenario": label, "policy": name,
                             **max_overcommit(scenario, policies, duration)})
        columns = OVERCOMMIT_COLUMNS
    else:
        rows, plots = [], []
        for label, scenario in scenarios:
            duration = args.duration or scenario.duration
            runs = []
            for name, policies in policy_sets:
                series = LabSeries(every=_plot_every(duration)) if args.report else None
                metrics = asyncio.run(run_one(scenario, policies, duration, series))
                rows.append(metrics.row(label, name))
                if series is not None:
                    runs.append((name, series))
            if args.report is not None:
                plots.append((label, _plot(label, len(plots) + 1, runs, args.report)))
        columns = COLUMNS
    if args.report is not None:
        _write_report(args.report, columns, rows, [] if args.max_overcommit else plots)
    if args.json:
        print(json.dumps(rows, indent=2), file=out)
    else:
        print("\n".join(_table(columns, rows)), file=out)
    return exitcodes.OK


def _plot_every(duration: float) -> float:
    # About 1000 points per line: plots stay light (the SVG above all).
    return max(10.0, duration / 1000)


def _plot(label: str, number: int, runs: list[tuple[str, LabSeries]],
          directory: Path) -> list[Path]:
    from ..simulator.report import plot_scenario, slug
    # Numbered: two labels may have the same slug (URIs differing in a dot).
    return plot_scenario(label, runs, directory, stem=f"{number:02d}-{slug(label)}")


def _write_report(directory: Path, columns: tuple[tuple[str, str], ...], rows: list[dict],
                  plots: list[tuple[str, list[Path]]]) -> None:
    from ..simulator.report import markdown_table
    lines = ["# momctl lab report", ""]
    lines += markdown_table([title for _, title in columns],
                            [[_shown(row[key]) for key, _ in columns] for row in rows])
    for label, paths in plots:
        png, svg = (next(p for p in paths if p.suffix == s) for s in (".png", ".svg"))
        lines += ["", f"## {label}", "", f"![{label}]({png.name}) ([SVG]({svg.name}))"]
    (directory / "report.md").write_text("\n".join(lines) + "\n")
