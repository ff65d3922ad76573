"""``momctl explain`` (why did a guest change?) and ``momctl history`` (a
statistic over the kept samples, as a table or a plot).

``explain`` prints what the ``Explain`` method of a guest (or the host)
returns: each control applied, from what to what, the policy file and line
of the ``Control`` call that set it, and the statistics the policies read
with their values at the time.  ``history --plot`` draws ``GetHistory``
with matplotlib, an optional extra (``pip install 'mom[plot]'``).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any, TextIO

from ..contract import GUEST_INTERFACE, HOST_INTERFACE, HOST_PATH
from ..fields import GUEST_CONTROL_FIELDS, GUEST_STATISTICS, HOST_STATISTICS, KIB, Field
from .bus_client import MomClient
from .bus_commands import bus_options, json_option, run_with_client
from .formatting import dump_json, field_text, format_age, format_kib
from .policy_tools import UsageError

#: Statistics and controls by policy name, for their units.
_FIELDS: dict[str, Field] = {f.name: f for f in HOST_STATISTICS + GUEST_STATISTICS
                             + GUEST_CONTROL_FIELDS}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*$", re.IGNORECASE)
_SECONDS_PER = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
PLOT_HINT = ("--plot needs matplotlib: pip install 'mom[plot]' (or apt-get install "
             "python3-matplotlib)")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h``, ``2d`` as seconds; UsageError otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise UsageError(f"invalid duration {text!r}: a number with s, m, h or d (1h, 30m)")
    return float(match.group(1)) * _SECONDS_PER[match.group(2).lower()]


async def _target(client: MomClient, key: str) -> tuple[str, str, str]:
    """(object path, interface, name to show) of ``key``: ``host``, a guest's name or UUID."""
    if key == "host":
        return HOST_PATH, HOST_INTERFACE, "host"
    path, props = await client.find_guest(key)
    name = str(props.get("Name") or path)
    uuid = props.get("UUID")
    return path, GUEST_INTERFACE, f"{name} ({uuid})" if uuid else name


# -- explain -----------------------------------------------------------------------

def value_text(name: str, value: Any) -> str:
    """A control's or statistic's value in its unit (KiB for people)."""
    field = _FIELDS.get(name)
    if field is not None and field.unit is KIB and isinstance(value, (int, float)) \
            and not isinstance(value, bool):
        return format_kib(value)
    if value is None:
        return "unknown"
    return field_text(field, value)


def _change_lines(change: dict[str, Any]) -> list[str]:
    name, before, after = change.get("control"), change.get("from"), change.get("to")
    text = f"  {name}: {value_text(name, before)} -> {value_text(name, after)}"
    field = _FIELDS.get(name)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                  for v in (before, after))
    if numbers and before != after and field is not None and field.unit is KIB:
        # How much memory moved: the figure the question is about.
        delta = after - before
        text += f" ({'+' if delta > 0 else ''}{format_kib(delta)})"
    lines = [text]
    policy, line, file = change.get("policy"), change.get("line"), change.get("file")
    if policy is None:
        lines.append("    set by: unknown (no Control call recorded)")
    else:
        where = f"{file}:{line}" if file else f"policy {policy}, line {line}"
        lines.append(f"    set by: (Control \"{name}\" ...) in policy {policy} at {where}")
    return lines


def _inputs_line(label: str, values: dict[str, Any], mean: bool = False) -> list[str]:
    if not values:
        return []
    shown = ", ".join(f"{'mean ' if mean else ''}{n} {value_text(n, v)}"
                      for n, v in sorted(values.items()))
    return [f"    {label}: {shown}"]


def explain_lines(name: str, records: list[dict[str, Any]], since: float | None,
                  now: float | None = None) -> list[str]:
    """``momctl explain``: the story of ``records`` (Explain's answer), oldest first."""
    now = time.time() if now is None else now
    span = f"in the last {format_age(now - since).removesuffix(' ago')}" \
        if since else "in the records kept"
    if not records:
        return [f"{name}: no control applied {span}"]
    count = sum(len(r.get("changes", [])) for r in records)
    lines = [f"{name}: {count} control{'s' if count != 1 else ''} applied {span}"]
    for record in records:
        seconds = record.get("time_usec", 0) / 1_000_000
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
        what = f"evaluation ({record.get('reason', '?')})"
        if record.get("dry_run"):
            what += ", dry run: not applied"
        lines.append("")
        lines.append(f"{stamp} ({format_age(now - seconds)}), {what}")
        for change in record.get("changes", []):
            lines.extend(_change_lines(change))
        inputs = record.get("inputs", {})
        lines.append("  inputs the policies read:")
        lines += _inputs_line("guest", inputs.get("guest", {}))
        lines += _inputs_line("guest", inputs.get("guest_means", {}), mean=True)
        lines += _inputs_line("host", inputs.get("host", {}))
        lines += _inputs_line("host", inputs.get("host_means", {}), mean=True)
    return lines


def run_explain(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    since = time.time() - parse_duration(args.since) if args.since else None

    async def body(client: MomClient) -> None:
        path, interface, name = await _target(client, args.guest)
        since_usec = int(since * 1_000_000) if since else 0
        (raw,) = await client.call(path, interface, "Explain", "t", [since_usec])
        records = json.loads(raw)
        if args.json:
            print(dump_json({"path": path, "records": records}), file=out)
        else:
            print("\n".join(explain_lines(name, records, since)), file=out)
    return run_with_client(args, body)


# -- history -----------------------------------------------------------------------

def plot_history(path: Path, title: str, field: str, samples: list[tuple[float, float]]) -> None:
    """Draw ``samples`` ((seconds since the epoch, value), oldest first) into
    ``path`` (its suffix picks the format: .png, .svg, .pdf)."""
    import datetime

    import matplotlib
    matplotlib.use("Agg")   # no display: a file only
    from matplotlib import dates, pyplot

    kib = (f := _FIELDS.get(field)) is not None and f.unit is KIB
    times = [datetime.datetime.fromtimestamp(t) for t, _ in samples]
    values = [v / 1024 if kib else v for _, v in samples]
    figure, axes = pyplot.subplots(figsize=(8, 3.5), layout="constrained")
    try:
        axes.plot(times, values, marker="o", markersize=3)
        axes.set_title(title)
        unit = "MiB" if kib else (f.unit.symbol if f is not None and f.unit else "")
        axes.set_ylabel(f"{field} ({unit})" if unit else field)
        axes.grid(True, alpha=0.3)
        axes.xaxis.set_major_formatter(dates.DateFormatter("%H:%M:%S"))
        figure.autofmt_xdate()
        figure.savefig(path)
    finally:
        pyplot.close(figure)


def run_history(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401 - the plot extra; checked before any call
        except ImportError:
            raise UsageError(PLOT_HINT) from None

    async def body(client: MomClient) -> None:
        path, interface, name = await _target(client, args.guest)
        (raw,) = await client.call(path, interface, "GetHistory", "s", [args.field])
        samples = [(t / 1_000_000, float(v)) for t, v in raw]
        if args.plot is not None:
            plot_history(Path(args.plot), f"{name}: {args.field}", args.field, samples)
            print(f"{len(samples)} samples of {args.field} plotted in {args.plot}", file=out)
        elif args.json:
            print(dump_json({"path": path, "field": args.field, "samples": [
                {"time_usec": int(t * 1_000_000), "value": v} for t, v in samples]}), file=out)
        else:
            if not samples:
                print(f"{name}: no samples of {args.field} kept", file=out)
            for t, v in samples:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
                print(f"{stamp}  {value_text(args.field, v)}", file=out)
    return run_with_client(args, body)


def add_explain_commands(commands: argparse._SubParsersAction) -> None:
    """``explain`` and ``history``."""
    bus, js = bus_options(), json_option()
    p = commands.add_parser("explain", parents=[bus, js],
                            help="why a guest changed: the controls applied, who set them "
                                 "(policy file and line) and on what inputs")
    p.add_argument("guest", metavar="NAME|UUID|host")
    p.add_argument("--since", metavar="DURATION",
                   help="only what was applied in the last DURATION (90s, 15m, 1h, 2d; "
                        "default: all momd keeps)")
    p.set_defaults(run=run_explain)
    p = commands.add_parser("history", parents=[bus, js],
                            help="a statistic over the samples momd keeps, or its plot")
    p.add_argument("guest", metavar="NAME|UUID|host")
    p.add_argument("field", metavar="FIELD", help="a policy name: balloon_cur, mem_free, ...")
    p.add_argument("--plot", metavar="FILE", help="draw it into FILE (.png, .svg; needs "
                                                   "matplotlib: pip install 'mom[plot]')")
    p.set_defaults(run=run_history)
