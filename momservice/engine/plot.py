"""MoM-style plot files: one tab-separated history file per entity.

With ``plot-dir`` set, every sample is appended as a line to
``<plot-dir>/momplot-<start time>/<entity>.dat``; the first line names the
columns.  Administrators feed these to gnuplot or a spreadsheet.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from .core import Engine, EngineObserver

log = logging.getLogger(__name__)


class PlotWriter:
    """Appends samples to per-entity ``.dat`` files under one session directory."""

    def __init__(self, plot_dir: Path, clock=time.time) -> None:
        self.clock = clock
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(clock()))
        self.directory = plot_dir / f"momplot-{stamp}"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, tuple[TextIO, tuple[str, ...]]] = {}

    def write(self, entity_name: str, sample: Mapping[str, Any]) -> None:
        """Append one sample; the column set is fixed by the entity's first sample."""
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", entity_name) or "_"
        entry = self._files.get(name)
        try:
            if entry is None:
                columns = tuple(sorted(sample))
                handle = open(self.directory / f"{name}.dat", "a", encoding="utf-8")
                handle.write("# time\t" + "\t".join(columns) + "\n")
                entry = self._files[name] = (handle, columns)
            handle, columns = entry
            values = ("" if sample.get(c) is None else str(sample.get(c)) for c in columns)
            handle.write(f"{self.clock():.3f}\t" + "\t".join(values) + "\n")
            handle.flush()
        except OSError as e:
            log.warning("cannot write plot data for %s: %s", entity_name, e)

    def forget(self, entity_name: str) -> None:
        """Close the file of an entity that went away."""
        entry = self._files.pop(re.sub(r"[^A-Za-z0-9_.-]", "_", entity_name) or "_", None)
        if entry is not None:
            entry[0].close()

    def close(self) -> None:
        for handle, _ in self._files.values():
            handle.close()
        self._files.clear()


class Plotter(EngineObserver):
    """Writes each new sample of the host and the guests to the plot files."""

    def __init__(self, engine: Engine, writer: PlotWriter) -> None:
        self.engine = engine
        self.writer = writer

    def host_sampled(self) -> None:
        self.writer.write("host", self.engine.host.latest)

    def guests_sampled(self) -> None:
        for guest in self.engine.guests.values():
            self.writer.write(guest.name, guest.latest)

    def guest_removed(self, uuid: str) -> None:
        pass  # the name is gone with the entity; its file stays for the record
