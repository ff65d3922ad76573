"""``momctl lab``: which policy set to trust, tried on simulated scenarios.

Each scenario runs through the real engine, controllers and policy
evaluation over the simulator (momservice.simulator), faster than real
time, once per policy set; one row per pair.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import TextIO

from ..policy import PolicyError, PolicySet
from ..policy_files import find_policy_files, read_policy_texts
from ..simulator import load_scenario, parse_uri
from ..simulator.lab import Lab
from ..simulator.metrics import LabMetrics
from ..simulator.scenario import Scenario, is_sim_uri
from . import exitcodes
from .formatting import format_table
from .policy_tools import UsageError

_REPO = Path(__file__).resolve().parents[2]
#: The policy sets compared when none is named: no policy, the shipped
#: defaults, and Proxmox-style auto-ballooning (from the source tree).
DEFAULT_POLICY_SETS = (("none", _REPO / "benchmarks" / "policies" / "none"),
                       ("defaults", _REPO / "policies"),
                       ("proxmox", _REPO / "benchmarks" / "policies" / "proxmox"))

COLUMNS = (("scenario", "SCENARIO"), ("policy", "POLICY"),
           ("host_swap_pages", "HOST SWAP (pages)"), ("guest_swap_pages", "GUEST SWAP (pages)"),
           ("pressure_seconds", "PRESSURE (s)"), ("balloon_ops", "BALLOON OPS"),
           ("reclaimed_mib", "RECLAIMED (MiB)"), ("worst_shortfall_mib", "WORST SHORTFALL (MiB)"))


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


async def run_one(scenario: Scenario, policies: PolicySet, duration: float) -> LabMetrics:
    """One scenario under one policy set, through the real engine; its metrics."""
    metrics = LabMetrics()
    lab = Lab("sim:///", policies, scenario=scenario)
    await lab.start()
    try:
        await lab.run(duration, observe=metrics.observe)
    finally:
        await lab.stop()
    metrics.balloon_ops = sum(len(e.applied_balloons) for e in lab.record.evaluations)
    return metrics


def run_lab(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    scenarios = [_scenario(text) for text in args.scenarios]
    policy_sets = _policy_sets(args.policy_dir)
    rows = []
    for label, scenario in scenarios:
        duration = args.duration or scenario.duration
        for name, policies in policy_sets:
            metrics = asyncio.run(run_one(scenario, policies, duration))
            rows.append(metrics.row(label, name))
    if args.json:
        print(json.dumps(rows, indent=2), file=out)
    else:
        lines = format_table([title for _, title in COLUMNS],
                             [[row[key] for key, _ in COLUMNS] for row in rows],
                             right=range(2, len(COLUMNS)))
        print("\n".join(lines), file=out)
    return exitcodes.OK
