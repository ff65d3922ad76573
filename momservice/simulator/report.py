"""``momctl lab --report DIR``: plots (PNG and SVG) and a markdown table of a lab run.

Per scenario one figure, one column per policy set: on top the host's
memory (guests and host in RAM, page cache, swap, against its total) with
its pressure (PSI some, avg10) on a second axis; below each guest's balloon
(solid) against its working set (dashed, same colour).  matplotlib is
imported here only, when a report is asked for (the ``lab`` extra): momd
never needs it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from .metrics import LabSeries

#: A figure's size per policy-set column, inches (at 100 dpi: 520 x 640 px).
_PANEL_WIDTH, _HEIGHT = 5.2, 6.4


def slug(text: str) -> str:
    """A file name (no extension) for a scenario label (a name or a sim:// URI)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")
    return name[:72].rstrip("-") or "scenario"


def plot_scenario(label: str, runs: Sequence[tuple[str, LabSeries]],
                  directory: Path, stem: str | None = None) -> list[Path]:
    """Write ``directory``/``stem``.png and .svg for one scenario; their paths.

    ``stem`` defaults to the label's slug.
    """
    import matplotlib
    matplotlib.use("Agg")   # no display: files only
    from matplotlib import pyplot

    columns = max(1, len(runs))
    figure, axes = pyplot.subplots(2, columns, figsize=(_PANEL_WIDTH * columns, _HEIGHT),
                                   sharex="col", sharey="row", squeeze=False)
    try:
        for column, (policy, series) in enumerate(runs):
            _host_panel(axes[0][column], policy, series, first=column == 0)
            _guest_panel(axes[1][column], series, first=column == 0)
        figure.suptitle(f"{label}: host memory and pressure, guests' balloons "
                        f"(solid) against their working sets (dashed)", fontsize=10)
        figure.tight_layout()
        stem = stem or slug(label)
        paths = [directory / f"{stem}.png", directory / f"{stem}.svg"]
        figure.savefig(paths[0], dpi=100)
        figure.savefig(paths[1])
    finally:
        pyplot.close(figure)
    return paths


def _hours(series: LabSeries) -> tuple[list[float], str]:
    span = series.times[-1] if series.times else 0.0
    if span > 2 * 86400:
        return [t / 86400 for t in series.times], "simulated days"
    if span > 3 * 3600:
        return [t / 3600 for t in series.times], "simulated hours"
    return [t / 60 for t in series.times], "simulated minutes"


def _host_panel(ax, policy: str, series: LabSeries, *, first: bool) -> None:
    x, _ = _hours(series)
    ax.set_title(f"policy: {policy}", fontsize=10)
    ax.stackplot(x, series.host_used, series.host_cache, series.host_swap,
                 labels=("in RAM", "page cache", "swap"),
                 colors=("#4c72b0", "#a1c9f4", "#dd8452"), alpha=0.9)
    ax.plot(x, series.host_total, color="black", linewidth=1, label="host memory")
    ax.set_ylim(bottom=0)
    if first:
        ax.set_ylabel("host MiB")
    pressure = ax.twinx()
    pressure.plot(x, series.pressure_some, color="#c44e52", linewidth=1,
                  label="PSI some (avg10 %)")
    pressure.set_ylim(0, 105)   # a line at 100 % stays visible above the frame
    pressure.set_ylabel("pressure %", fontsize=8)
    handles, labels = ax.get_legend_handles_labels()
    more, more_labels = pressure.get_legend_handles_labels()
    ax.legend(handles + more, labels + more_labels, fontsize=7, loc="lower left")


def _guest_panel(ax, series: LabSeries, *, first: bool) -> None:
    x, unit = _hours(series)
    colours = [f"C{i % 10}" for i in range(len(series.guest_names))]
    for name, colour in zip(series.guest_names, colours):
        ax.plot(x, series.balloon[name], color=colour, linewidth=1, label=name)
        ax.plot(x, series.working_set[name], color=colour, linewidth=0.8, linestyle="--")
    ax.set_ylim(bottom=0)
    ax.set_xlabel(unit)
    if first:
        ax.set_ylabel("guest MiB")
        if len(series.guest_names) <= 12:
            ax.legend(fontsize=6, loc="upper right", ncol=2)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A markdown table (numbers right-aligned)."""
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|")
    numeric = [all(isinstance(r[i], (int, float)) for r in rows) if rows else False
               for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |",
             "| " + " | ".join("---:" if n else "---" for n in numeric) + " |"]
    lines.extend("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)
    return lines
