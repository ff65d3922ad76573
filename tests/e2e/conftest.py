"""End-to-end tests: the measured times are listed at the end of every run."""

from __future__ import annotations

import pytest

MEASUREMENTS: list[tuple[str, str]] = []


def measured(what: str, value: str) -> None:
    """Print a measurement now (visible with -s) and list it in the summary."""
    MEASUREMENTS.append((what, value))
    print(f"[e2e] {what}: {value}", flush=True)


def pytest_terminal_summary(terminalreporter) -> None:
    if MEASUREMENTS:
        terminalreporter.section("e2e measurements")
        for what, value in MEASUREMENTS:
            terminalreporter.write_line(f"{what}: {value}")


@pytest.fixture(scope="session")
def measure():
    """``measure(what, value)``: print a measured time and list it at the end."""
    return measured
