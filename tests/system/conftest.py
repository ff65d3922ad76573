"""System tests: momd installed on a real systemd host (tests/helpers/systemd_host.py).

Each test module gets one booted host per install way (``installed_host``,
module-scoped, parametrized): ``make install`` from the checkout, or
``apt-get install`` of the ``.deb`` that ``make deb`` builds.  The wall
times of preparing the layer, booting and installing are listed at the end
of the run.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

import momservice
from tests.helpers import ksm_sysfs
from tests.helpers.measurements import Measurements
from tests.helpers.systemd_host import (REPO, SOURCE_MOUNT, SystemdHost, ensure_layer,
                                        skip_reason)
from tests.system.momd_on_host import Bus

INSTALL_WAYS = ("make-install", "deb")

_times = Measurements("system", "system test wall times")


def measured(what: str, seconds: float) -> None:
    _times(what, f"{seconds:.1f} s")


def pytest_terminal_summary(terminalreporter) -> None:
    _times.write_summary(terminalreporter)


# --------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def systemd_layer() -> Path:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    layer, built = ensure_layer()
    measured(f"prepare the host layer ({'built' if built else 'cached'})",
             time.monotonic() - started)
    return layer


@pytest.fixture(scope="session")
def mom_deb() -> Path:
    """The .deb of this checkout, built by ``make deb`` unless up to date, in the
    same place as the packaging tests' (tests/test_packaging.py), so one build
    serves both."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    started = time.monotonic()
    dist = REPO / ".cache" / "deb"
    result = subprocess.run(["make", "--no-print-directory", "deb", f"DIST={dist}"], cwd=REPO,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, f"make deb failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    debs = sorted(dist.glob(f"mom_{momservice.__version__}_all.deb"))
    assert len(debs) == 1, f"make deb left {sorted(dist.iterdir())} in {dist}"
    measured("make deb", time.monotonic() - started)
    return debs[0]


@contextlib.contextmanager
def real_ksm_kept() -> Iterator[None]:
    """The machine's KSM knobs saved before momd runs and restored after it.

    momd's KSM controller writes them from its first evaluation on, so
    this spans the host's whole life, not one test."""
    if not ksm_sysfs.REAL.is_dir():
        yield
        return
    with ksm_sysfs.saved_real_ksm():
        yield


def install(host: SystemdHost, way: str, request: pytest.FixtureRequest) -> None:
    deb = request.getfixturevalue("mom_deb") if way == "deb" else None
    started = time.monotonic()
    if way == "make-install":
        host.run(["make", "-C", SOURCE_MOUNT, "install"], timeout=600)
        # What `make install` says to do next.
        host.run(["systemctl", "daemon-reload"])
    else:
        assert deb is not None
        shutil.copy2(deb, host.path(f"/tmp/{deb.name}"))
        host.run(["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600",
                  f"/tmp/{deb.name}"], timeout=600)
    measured(f"install ({way})", time.monotonic() - started)


@pytest.fixture(scope="module", params=INSTALL_WAYS)
def installed_host(request: pytest.FixtureRequest, systemd_layer: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemdHost]:
    """A booted systemd host with momd installed one way; torn down after the module."""
    way = request.param
    directory = tmp_path_factory.mktemp(f"sdhost-{way}")
    host = SystemdHost(systemd_layer, directory)
    module = request.module.__name__.rsplit(".", 1)[-1]
    with real_ksm_kept():
        host.boot()
        measured(f"boot ({module}, {way})", host.boot_seconds or 0)
        try:
            install(host, way, request)
            yield host
        finally:
            started = time.monotonic()
            host.shutdown()
            measured(f"shutdown ({module}, {way})", time.monotonic() - started)
    left = host.leftovers()
    shutil.rmtree(directory, ignore_errors=True)
    assert not left, f"the systemd host left behind: {left}"
    assert not directory.exists()


@pytest.fixture(scope="module")
def bus(installed_host: SystemdHost) -> Bus:
    return Bus(installed_host)
