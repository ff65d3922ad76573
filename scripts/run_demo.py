#!/usr/bin/env python3
"""`make run`: momd managing a simulated host, watched live with momctl monitor.

Starts, all inside one temporary folder and without root: a private
D-Bus daemon, momd on the simulated hypervisor (``sim://``, the default
scenario: 8 guests overcommitted 1.9x, one of them spiking after a while)
with the shipped policies, and ``momctl monitor`` in the foreground.
Ctrl-C, or RUN_SECONDS=N in the environment, stops everything; no process
is left behind and the folder is removed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from momservice.contract import BUS_NAME

REPO = Path(__file__).resolve().parent.parent
# 1.9x: enough that the shipped policies must move balloons at once (at
# 1.75x this host has room enough and they leave the balloons alone).
DEFAULT_URI = "sim:///?guests=8&overcommit=1.9&seed=1"

# A bus for this demo alone: unlike the system bus, anyone on it may own
# any name, so momd needs no root here.
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""

MOMD_CONFIG = """# momd.conf of the demo (a MoM-style configuration file)
[main]
libvirt-hypervisor-uri = {uri}
host-monitor-interval = 2
guest-monitor-interval = 2
guest-manager-interval = 10
policy-engine-interval = 4
sample-history-length = 5
controllers = Balloon, KSM
policy-dir = {policies}
state-dir = {state}

[logging]
log = {log}
verbosity = info
"""


def start_bus(tmp: Path) -> tuple[subprocess.Popen, str]:
    socket = tmp / "bus"
    config = tmp / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=socket))
    bus = subprocess.Popen(["dbus-daemon", f"--config-file={config}", "--nofork",
                            "--print-address"], stdout=subprocess.PIPE, text=True,
                           start_new_session=True)
    address = bus.stdout.readline().strip()
    if not address:
        raise SystemExit("make run: dbus-daemon did not start")
    return bus, address


def wait_for_momd(address: str, momd: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if momd.poll() is not None:
            raise SystemExit(f"make run: momd exited ({momd.returncode}):\n{log.read_text()}")
        probe = subprocess.run(
            ["dbus-send", f"--bus={address}", "--print-reply", "--dest=org.freedesktop.DBus",
             "/org/freedesktop/DBus", "org.freedesktop.DBus.NameHasOwner",
             f"string:{BUS_NAME}"], capture_output=True, text=True)
        if "boolean true" in probe.stdout:
            return
        time.sleep(0.2)
    raise SystemExit("make run: momd did not get on the bus in time")


def stop(process: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main() -> int:
    uri = os.environ.get("MOM_SIM_URI", DEFAULT_URI)
    seconds = os.environ.get("RUN_SECONDS")
    tmp = Path(tempfile.mkdtemp(prefix="mom-demo-"))
    bus = momd = None
    log = tmp / "momd.log"
    try:
        bus, address = start_bus(tmp)
        config = tmp / "momd.conf"
        config.write_text(MOMD_CONFIG.format(uri=uri, policies=REPO / "policies",
                                             state=tmp / "state", log=log))
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=address)
        env.pop("NOTIFY_SOCKET", None)
        momd = subprocess.Popen([sys.executable, "-m", "momservice.momd", "-c", str(config)],
                                cwd=REPO, env=env, start_new_session=True)
        wait_for_momd(address, momd, log)
        print(f"momd is managing {uri} (log: {log}); Ctrl-C stops the demo.", flush=True)
        monitor = [sys.executable, "-m", "momservice.cli.momctl", "--address", address,
                   "monitor"]
        if seconds:
            monitor += ["--seconds", seconds]
        try:
            code = subprocess.run(monitor, cwd=REPO).returncode
        except KeyboardInterrupt:
            code = 0
        return code
    finally:
        stop(momd)
        stop(bus)
        if momd is not None and momd.returncode not in (0, None):
            print(f"momd ended with {momd.returncode}; its log:\n{log.read_text()}",
                  file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.exit(main())
