"""What momd as a process leaves out of its memory (issue 13: its resident size).

A private system bus with polkitd; momd on libvirt's test driver as a process.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from momservice.contract import BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH

from tests.helpers.libvirt_node import guest_specs, node_uri, write_node_xml
from tests.helpers.momd_process import Momd, momd_config
from tests.helpers.private_bus import skip_reason, system_bus_with_polkit

REPO = Path(__file__).resolve().parent.parent
_reason = skip_reason()
needs_bus = pytest.mark.skipif(_reason is not None, reason=_reason or "")


@needs_bus
@pytest.mark.timeout(180)
def test_momd_runs_without_tls(tmp_path: Path) -> None:
    node = write_node_xml(tmp_path / "node.xml", guest_specs(2))
    config = momd_config(tmp_path, node_uri(node))
    with system_bus_with_polkit(tmp_path / "bus") as system:
        momd = Momd(system, config, tmp_path / "momd.log")
        try:
            pid = momd.process.pid
            maps = Path(f"/proc/{pid}/maps").read_text()
            # What momd uses is mapped (the check can fail) ...
            assert "libvirt" in maps and "_asyncio" in maps
            # ... and what it needs not is not.
            assert "libssl" not in maps and "_ssl." not in maps
        finally:
            assert momd.stop() == 0


# In a process of its own: the test process has loaded the simulator already.
_SIMULATOR = """
import sys
from momservice.simulator.uri import is_sim_uri
assert is_sim_uri("sim:///?guests=2") and not is_sim_uri("test:///default")
print(sorted(m for m in sys.modules if m.startswith("momservice.simulator")))
from momservice.simulator import Scenario, is_sim_uri as same
assert same is is_sim_uri and Scenario.__module__ == "momservice.simulator.scenario"
print("momservice.simulator.scenario" in sys.modules)
"""


def test_reading_a_uri_loads_no_simulator_and_its_names_still_import():
    out = subprocess.run([sys.executable, "-c", _SIMULATOR], capture_output=True, text=True,
                         check=True, timeout=60, cwd=REPO).stdout.splitlines()
    assert out == ["['momservice.simulator', 'momservice.simulator.uri']", "True"]


def _last_evaluation(address: str) -> int:
    out = subprocess.run(["busctl", f"--address={address}", "get-property", BUS_NAME,
                          MANAGER_PATH, MANAGER_INTERFACE, "LastEvaluation"],
                         capture_output=True, text=True, timeout=30)
    return int(out.stdout.split()[1]) if out.returncode == 0 else 0


#: What momd imported only to start, or for a path it may never take:
#: argparse for its command line (getopt reads it now), hashlib and its
#: OpenSSL for the policy code cache's keys (importlib's source_hash makes
#: them now), the metrics file's and plot files' writers when there is no
#: metrics file and no plot-dir, and json until a client asks for Explain.
LEFT_OUT = ("argparse", "hashlib", "_hashlib", "momservice.metrics", "momservice.engine.plot",
            "json")


@needs_bus
@pytest.mark.timeout(180)
def test_momd_leaves_out_what_it_runs_without(tmp_path: Path) -> None:
    node = write_node_xml(tmp_path / "node.xml", guest_specs(2))
    config = momd_config(tmp_path, node_uri(node), engine_interval=0.5)
    with system_bus_with_polkit(tmp_path / "bus") as system:
        # -X importtime: every module the process imports, when it does, on stderr.
        momd = Momd(system, config, tmp_path / "momd.log",
                    command=(sys.executable, "-X", "importtime", "-m", "momservice.momd"))
        try:
            # Two evaluations seen: momd is past its start, in its steady state.
            seen, deadline = {0}, time.monotonic() + 90
            while len(seen) < 3:
                assert time.monotonic() < deadline, momd.log_text()[-3000:]
                seen.add(_last_evaluation(system.address))
                time.sleep(0.2)
        finally:
            assert momd.stop() == 0
    imported = set(re.findall(r"^import time:.*\|\s*(\S+)$", momd.log_text(), re.M))
    # What momd uses is seen (the check can fail) ...
    assert {"asyncio", "configparser", "getopt", "libvirt", "dbus_next"} <= imported
    # ... and what it runs without is not.
    assert imported.isdisjoint(LEFT_OUT), sorted(imported.intersection(LEFT_OUT))
