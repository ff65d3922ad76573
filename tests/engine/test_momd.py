"""momd as a process: config file, logs, sd_notify, plot files, signals.

momd runs against libvirt's test driver (a node file of guests) with the
balloon controller only, so nothing on this host is written; it reads the
real /proc.  systemd is played by the test: a datagram socket in
NOTIFY_SOCKET receives READY=1, STATUS= and WATCHDOG=1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.libvirt_node import guest_specs, node_uri, write_node_xml

ROOT = Path(__file__).resolve().parents[2]


class NotifySocket:
    """What systemd would hear from the service."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.extend(self.sock.recv(4096).decode().splitlines())
            except BlockingIOError:
                return self.messages

    def close(self) -> None:
        self.sock.close()


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def setup(tmp_path: Path):
    node = write_node_xml(tmp_path / "node.xml", guest_specs(4))
    policy_dir = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policy_dir)
    config = tmp_path / "momd.conf"
    config.write_text(f"""\
# A MoM-style configuration, with keys momd accepts and ignores.
[main]
host-monitor-interval = 0.3
guest-monitor-interval = 0.3
guest-manager-interval = 1
policy-engine-interval = 0.3
sample-history-length = 3
libvirt-hypervisor-uri = {node_uri(node)}
controllers = Balloon
policy-dir = {policy_dir}
plot-dir = {tmp_path / "plots"}
state-dir = {tmp_path / "state"}
rpc-port = -1

[logging]
log = stdio
verbosity = info
""")
    return tmp_path, config, policy_dir


def test_momd_runs_reloads_and_stops(setup) -> None:
    tmp_path, config, policy_dir = setup
    notify = NotifySocket(tmp_path / "notify")
    log = tmp_path / "momd.log"
    # No bus here: momd must run on without its D-Bus interface.
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="600000",
               DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={tmp_path / 'no-bus'}")
    env.pop("WATCHDOG_PID", None)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "momservice.momd", "-c", str(config)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "READY=1" in notify.drain(), 30, "READY=1")
        wait_until(lambda: "WATCHDOG=1" in notify.drain(), 10, "WATCHDOG=1")
        assert any(m.startswith("STATUS=4 guests") for m in notify.drain()), notify.messages
        text = log.read_text()
        assert text.count("is now managed") == 4
        assert "rpc-port" in text  # the ignored MoM key is named in a warning
        # The comfortable host grows ballooned test guests back.
        wait_until(lambda: "Set balloon of guest" in log.read_text(), 10, "a balloon change")

        # SIGHUP re-reads the policies: a broken one is skipped, named, and
        # the others stay active.
        (policy_dir / "50-broken.policy").write_text("(if 1 2)\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "policies reloaded" in log.read_text(), 10, "the reload")
        text = log.read_text()
        assert "50-broken.policy:1" in text
        assert "policies reloaded: 00-defines, 02-balloon, 03-ksm" in text

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert "STOPPING=1" in notify.drain()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
    assert "momd stopped" in log.read_text()
    assert "Traceback" not in log.read_text()

    # MoM-style plot files: one per entity, a header and one row per sample.
    (session,) = (tmp_path / "plots").iterdir()
    host_lines = (session / "host.dat").read_text().splitlines()
    assert host_lines[0].startswith("# time\t") and "mem_free" in host_lines[0]
    assert len(host_lines) >= 3
    guest_files = sorted(p.name for p in session.glob("guest-*.dat"))
    assert len(guest_files) == 4


def test_momd_refuses_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "momd.conf"
    config.write_text("[main]\npolicy-engine-interval = soon\n")
    result = subprocess.run([sys.executable, "-m", "momservice.momd", "-c", str(config)],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "[main] policy-engine-interval" in result.stderr
    assert "Traceback" not in result.stderr
