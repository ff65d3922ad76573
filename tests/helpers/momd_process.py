"""momd as a process on a private system bus, for end-to-end tests."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from momservice.contract import BUS_NAME

REPO = Path(__file__).resolve().parents[2]


def momd_config(tmp: Path, uri: str, *, engine_interval: float = 30,
                collect_interval: float = 0.3, controllers: str = "Balloon",
                extra_main: str = "", verbosity: str = "debug",
                policies: Path = REPO / "policies") -> Path:
    """A momd.conf on ``uri`` with copies of the ``policies`` (the shipped
    defaults unless told) and its own state dir.

    Collection runs often, so tests see changes quickly; the policy engine
    rarely (by default), so what a test sets is not undone before it looks.
    """
    policy_dir = tmp / "policies"
    if not policy_dir.exists():
        policy_dir.mkdir(parents=True)
        for path in sorted(policies.glob("*.policy")):
            shutil.copyfile(path, policy_dir / path.name)
    config = tmp / "momd.conf"
    config.write_text(f"""\
[main]
host-monitor-interval = {collect_interval}
guest-monitor-interval = {collect_interval}
guest-manager-interval = {collect_interval}
policy-engine-interval = {engine_interval}
sample-history-length = 3
libvirt-hypervisor-uri = {uri}
controllers = {controllers}
policy-dir = {policy_dir}
state-dir = {tmp / "state"}
{extra_main}
[logging]
log = stdio
verbosity = {verbosity}
""")
    return config


def momctl(system, *args: str) -> subprocess.CompletedProcess[str]:
    """momctl as a process on ``system``'s bus, its output captured."""
    return subprocess.run([sys.executable, "-m", "momservice.cli.momctl", *args],
                          cwd=REPO, env=system.env(), capture_output=True, text=True,
                          timeout=60)


class Momd:
    """momd started on a private system bus; waits until it owns its name.

    ``command`` replaces ``python -m momservice.momd`` (the ``-c CONFIG``
    arguments are added to it), e.g. with ``tests.helpers.momd_fake_sysfs``.
    """

    def __init__(self, system, config: Path, log: Path, timeout: float = 30,
                 command: Sequence[str] | None = None) -> None:
        self.system = system
        self.config = config
        self.log = log
        env = system.env()
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        env.pop("NOTIFY_SOCKET", None)
        with open(log, "a") as out:
            self.process = subprocess.Popen(
                [*(command or (sys.executable, "-m", "momservice.momd")), "-c", str(config)],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            system.bus.wait_for_name(BUS_NAME, timeout, process=self.process)
        except BaseException:
            self.stop()
            raise AssertionError(f"momd did not get on the bus:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
