"""Browser tests of the Cockpit page: measured figures and artefacts listed at the end."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers.measurements import Measurements

measured = Measurements("cockpit", "cockpit page: measurements and artefacts")

#: Where screenshots are copied to outlive pytest's tmp dirs (printed at the end).
ARTIFACTS = Path(os.environ.get("MOM_TEST_ARTIFACTS", "/tmp/mom-test-artifacts")) / "cockpit"


def pytest_terminal_summary(terminalreporter) -> None:
    measured.write_summary(terminalreporter)


@pytest.fixture(scope="session")
def measure():
    """``measure(what, value)``: print a figure and list it at the end."""
    return measured


@pytest.fixture(scope="session")
def keep_artifact(measure):
    """``keep_artifact(path)``: copy a file to ARTIFACTS and name it in the summary."""

    def keep(path: Path) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        target = ARTIFACTS / path.name
        shutil.copyfile(path, target)
        measure(f"artefact {path.stem}", str(target))
        return target

    return keep
