"""A Service without a bus, away from the real host, for tests of its operations.

The hypervisor is libvirt's test driver (a node file of running guests),
the host a temporary /proc and /sys tree (the KSM controller writes its
copy of /sys/kernel/mm/ksm), the policies copies of the shipped ones in a
temporary directory, and the state directory is temporary too.  Loops run
at intervals far beyond a test's length, so only what a test asks for
happens.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from momservice.config import Config
from momservice.policy_files import find_policy_files, read_policy_texts
from momservice.assembly import build_service
from momservice.service import Service
from tests.helpers.fake_host import FakeHost
from tests.helpers.libvirt_node import guest_specs, node_uri, write_node_xml

SHIPPED = Path(__file__).resolve().parents[2] / "policies"
GiB = 1024 * 1024
NEVER = 3600.0  # a loop interval no test waits for


class Setup:
    """Four test-driver guests, a fake host with 64 GiB, copies of the shipped policies."""

    def __init__(self, tmp_path: Path) -> None:
        # Guests 0 and 2 have a min_guarantee (256 and 512 MiB).
        self.specs = guest_specs(4, min_guarantee_every=2)
        self.node = write_node_xml(tmp_path / "node.xml", self.specs)
        self.host = FakeHost(tmp_path / "host")
        self.host.set_memory(64 * GiB, 32 * GiB)
        self.policy_dir = tmp_path / "policies"
        shutil.copytree(SHIPPED, self.policy_dir)
        self.state_dir = tmp_path / "state"
        self.ksm_dir = self.host.sys / "kernel/mm/ksm"
        self.config = dataclasses.replace(
            Config.defaults(), hypervisor_uri=node_uri(self.node),
            policy_dir=self.policy_dir, state_dir=self.state_dir,
            controllers=("Balloon", "KSM"), sample_history_length=3,
            host_monitor_interval=NEVER, guest_monitor_interval=NEVER,
            guest_manager_interval=NEVER, policy_engine_interval=NEVER)

    def service(self, **config_changes: Any) -> Service:
        config = dataclasses.replace(self.config, **config_changes)
        return build_service(config, proc_root=self.host.proc, sys_root=self.host.sys,
                             pressure_path=None)

    def file_policies(self) -> dict[str, str]:
        return read_policy_texts(find_policy_files([self.policy_dir]))

    def ksm_files(self) -> dict[str, str]:
        return {p.name: p.read_text() for p in self.ksm_dir.iterdir()}
