"""momd on sim:// end to end: a private bus, momd as a process, momctl.

Everything momd sees and changes is the simulation's: the real host's
KSM settings must not move, and the host it reports is the simulated one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.ksm_sysfs import KsmBusy, exclusive_real_ksm
from tests.helpers.momd_process import Momd, momctl, momd_config
from tests.helpers.private_bus import skip_reason, system_bus_with_polkit

URI = "sim:///?guests=3&seed=2&host_mib=6144"
REAL_KSM = Path("/sys/kernel/mm/ksm")

_reason = skip_reason(polkit=False)
pytestmark = [pytest.mark.skipif(_reason is not None, reason=_reason or ""),
              pytest.mark.timeout(120)]


def real_ksm() -> dict[str, str]:
    if not REAL_KSM.is_dir():
        return {}
    return {p.name: p.read_text() for p in REAL_KSM.iterdir()
            if p.name in ("run", "pages_to_scan", "sleep_millisecs", "merge_across_nodes")}


@pytest.fixture
def real_ksm_unchanged_by_others():
    """The real KSM, held so that other test runs do not change it while
    this test checks that it did not change."""
    try:
        with exclusive_real_ksm():
            yield
    except KsmBusy as e:
        pytest.skip(str(e))


def test_momctl_drives_momd_on_a_simulated_host(tmp_path: Path,
                                               real_ksm_unchanged_by_others) -> None:
    config = momd_config(tmp_path, URI, engine_interval=30, controllers="Balloon, KSM")
    ksm_before = real_ksm()
    with system_bus_with_polkit(tmp_path / "bus", polkit=False) as system:
        momd = Momd(system, config, tmp_path / "momd.log")
        try:
            status = momctl(system, "status", "--json")
            assert status.returncode == 0, status.stderr
            state = json.loads(status.stdout)
            assert state["manager"]["HypervisorURI"] == URI
            # The host is the simulated one: 6 GiB, whatever this machine has.
            assert state["host"]["MemTotal"] == 6144 * 1024
            guests = json.loads(momctl(system, "guests", "--json").stdout)
            assert [g["Name"] for g in guests] == ["sim-guest-01", "sim-guest-02",
                                                   "sim-guest-03"]

            moved = momctl(system, "balloon", "sim-guest-02", "2G")
            assert moved.returncode == 0, moved.stderr
            shown = json.loads(momctl(system, "guest", "sim-guest-02", "--json").stdout)
            assert shown["BalloonTarget"] == 2 * 1024 * 1024

            tuned = momctl(system, "ksm", "set", "pages_to_scan=321")
            assert tuned.returncode == 0, tuned.stderr
            ksm = json.loads(momctl(system, "ksm", "--json").stdout)
            assert ksm["KsmPagesToScan"] == 321
        finally:
            momd.stop()
    assert "Traceback" not in momd.log_text()
    assert real_ksm() == ksm_before
