"""Figures a test suite measures as it runs, printed at once and listed at the end.

Timings are never asserted (the machine is shared and they move): they are
reported, for the closing notes and for whoever reads the CI log.
"""

from __future__ import annotations

from typing import Any


class Measurements:
    """One suite's list of measured figures, under its own tag and section title."""

    def __init__(self, tag: str, title: str) -> None:
        self.tag = tag
        self.title = title
        self.items: list[tuple[str, str]] = []

    def __call__(self, what: str, value: str) -> None:
        """Print ``what: value`` now (visible with -s) and keep it for the summary."""
        self.items.append((what, value))
        print(f"[{self.tag}] {what}: {value}", flush=True)

    def write_summary(self, terminalreporter: Any) -> None:
        """The section for pytest_terminal_summary, if anything was measured."""
        if self.items:
            terminalreporter.section(self.title)
            for what, value in self.items:
                terminalreporter.write_line(f"{what}: {value}")
