"""momd with ``--metrics-file``: a real momd process on the simulator (sim://:
nothing of the host is read or written) and a private system bus with the
real polkitd.  The file appears, Prometheus' promtool accepts it, and a
balloon change made over the bus shows up in it."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from momservice.contract import GUEST_INTERFACE, guest_path
from momservice.simulator.simulation import guest_uuid
from tests.helpers.momd_process import Momd, momd_config
from tests.helpers.polling import wait_until
from tests.helpers.private_bus import skip_reason
from tests.helpers.promtool import PromtoolUnavailable, check_metrics, find_promtool

_reason = skip_reason()
pytestmark = [pytest.mark.skipif(_reason is not None, reason=_reason or ""),
              pytest.mark.timeout(180)]

GUEST = "sim-guest-01"
UUID = guest_uuid(GUEST)
LABELS = f'{{guest="{GUEST}",uuid="{UUID}"}}'


def value(text: str, sample: str) -> float | None:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


@pytest.fixture(scope="module")
def momd(system, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics")
    metrics = tmp / "textfile" / "mom.prom"
    metrics.parent.mkdir()
    # The policies evaluate once, at start: nothing undoes the test's balloon change.
    config = momd_config(tmp, "sim:///?guests=3&seed=1", verbosity="info",
                         engine_interval=86400)
    daemon = Momd(system, config, tmp / "momd.log",
                  command=[sys.executable, "-m", "momservice.momd",
                           "--metrics-file", str(metrics)])
    try:
        yield daemon, metrics
    finally:
        daemon.stop()


def test_momd_writes_the_metrics_file(momd):
    daemon, metrics = momd
    text = wait_until(lambda: (t := read(metrics)) and value(
        t, f"mom_guest_balloon_current_bytes{LABELS}") is not None and t,
        "the metrics file with the guest's balloon")
    assert stat.S_IMODE(metrics.stat().st_mode) == 0o644
    assert value(text, "mom_guests") == 3
    assert value(text, "mom_host_memory_total_bytes") > 0
    assert value(text, "mom_policy_evaluations_total") >= 1
    # Only the file itself: no temporary file left beside it.
    assert [p.name for p in metrics.parent.iterdir()] == ["mom.prom"]


def test_promtool_accepts_the_file(momd):
    daemon, metrics = momd
    try:
        promtool = find_promtool()
    except PromtoolUnavailable as e:
        pytest.skip(f"promtool (Debian's prometheus package) cannot be fetched: {e}")
    text = wait_until(lambda: read(metrics), "the metrics file")
    result = check_metrics(promtool, text)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), \
        result.stdout + result.stderr


def test_a_balloon_change_shows_in_the_file(momd, system):
    daemon, metrics = momd
    current = f"mom_guest_balloon_current_bytes{LABELS}"
    text = wait_until(lambda: (t := read(metrics)) and value(t, current) is not None and t,
                    "the guest's balloon in the metrics file")
    before = int(value(text, current))
    operations = value(text, "mom_balloon_operations_total")
    target_kib = before // 1024 - 262144          # 256 MiB less, above the 256 MiB floor
    assert target_kib > 262144, before
    call = subprocess.run(
        ["gdbus", "call", "--address", system.address, "--dest", "org.ovirt.mom1",
         "--object-path", guest_path(UUID), "--method",
         f"{GUEST_INTERFACE}.SetBalloonTarget", f"uint64 {target_kib}"],
        capture_output=True, text=True, timeout=60)
    assert call.returncode == 0, call.stdout + call.stderr + daemon.log_text()[-3000:]
    after = wait_until(
        lambda: (t := read(metrics)) and value(t, current) == target_kib * 1024 and t,
        "the new balloon size in the metrics file")
    assert value(after, f"mom_guest_balloon_target_bytes{LABELS}") == target_kib * 1024
    assert value(after, "mom_balloon_operations_total") >= operations + 1
    assert daemon.process.poll() is None
