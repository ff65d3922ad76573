"""End-to-end tests: the measured times are listed at the end of every run."""

from __future__ import annotations

import pytest

from tests.helpers.measurements import Measurements

measured = Measurements("e2e", "e2e measurements")


def pytest_terminal_summary(terminalreporter) -> None:
    measured.write_summary(terminalreporter)


@pytest.fixture(scope="session")
def measure():
    """``measure(what, value)``: print a measured time and list it at the end."""
    return measured
