"""momd's unit under a real systemd: bus activation, status, reload, restart,
the watchdog and the sandbox, for both install ways (``installed_host``)."""

from __future__ import annotations

import re
import signal
import stat

import pytest

from momservice.contract import BUS_NAME, HOST_INTERFACE, MANAGER_INTERFACE
from tests.helpers import ksm_sysfs
from tests.system.momd_on_host import (HOST_OBJECT, MANAGER, gvariant_string, main_pid,
                                       wait_active)

pytestmark = pytest.mark.timeout(900)

POLICY_NAME = "systest"
POLICY_TEXT = "# set over the bus by the system tests\n(defvar systest_marker 7)\n"


def test_first_bus_call_activates_momd(installed_host, bus):
    host = installed_host
    assert host.show("momd.service", "Type") == "dbus"
    assert host.show("momd.service", "BusName") == BUS_NAME
    # The .deb's maintainer scripts may have started it already: stopped,
    # the next call must bring it back on its own.
    host.run(["systemctl", "stop", "momd.service"])
    assert host.show("momd.service", "ActiveState") in ("inactive", "failed")
    before = int(host.show("momd.service", "NRestarts") or 0)

    version = bus.get(MANAGER_INTERFACE, "Version")

    assert isinstance(version, str) and version
    assert host.show("momd.service", "ActiveState") == "active"
    assert main_pid(host) > 0
    # Activated once, not started by a restart loop.
    assert int(host.show("momd.service", "NRestarts")) == before
    activation = host.run(["journalctl", "--no-pager", "-b", "-u", "dbus.service"]).stdout
    assert f"Activating via systemd: service name='{BUS_NAME}'" in activation


def test_status_text_shows_momds_status(installed_host, bus):
    host = installed_host
    wait_active(host)
    status = host.wait_for("a StatusText", lambda: host.show("momd.service", "StatusText"))
    count = bus.get(MANAGER_INTERFACE, "GuestCount")
    connected = bus.get(MANAGER_INTERFACE, "Connected")
    match = re.match(r"(\d+) guests?, (connected|disconnected)", status)
    assert match, status
    assert int(match.group(1)) == count
    assert (match.group(2) == "connected") == connected


def test_reload_keeps_it_up_and_rereads_the_policy_files(installed_host, bus):
    host = installed_host
    pid = wait_active(host)
    host.run(["install", "-D", "-m", "0644", "/dev/stdin", "/etc/mom/policy.d/50-reloaded.policy"],
             input="(defvar reloaded_marker 1)\n")
    assert "50-reloaded" not in bus.get(MANAGER_INTERFACE, "PolicyNames")

    host.run(["systemctl", "reload", "momd.service"])

    assert host.show("momd.service", "ActiveState") == "active"
    assert main_pid(host) == pid
    host.wait_for("the reloaded policy file", lambda: "50-reloaded" in
                  bus.get(MANAGER_INTERFACE, "PolicyNames"))
    host.run(["rm", "/etc/mom/policy.d/50-reloaded.policy"])
    host.run(["systemctl", "reload", "momd.service"])
    host.wait_for("the policy file gone", lambda: "50-reloaded" not in
                  bus.get(MANAGER_INTERFACE, "PolicyNames"))
    assert main_pid(host) == pid


def test_restart_keeps_the_policies_set_over_the_bus(installed_host, bus):
    host = installed_host
    pid = wait_active(host)
    bus.manager("SetPolicy", gvariant_string(POLICY_NAME), gvariant_string(POLICY_TEXT))

    host.run(["systemctl", "restart", "momd.service"])

    new_pid = wait_active(host)
    assert new_pid != pid
    got = bus.manager("GetPolicy", gvariant_string(POLICY_NAME)).stdout
    assert "systest_marker 7" in got
    assert POLICY_NAME in bus.get(MANAGER_INTERFACE, "PolicyNames")


def private_dir(host, path: str):
    """The host's directory ``path``, which only its owner may enter."""
    directory = host.path(path)
    mode = stat.S_IMODE(directory.stat().st_mode)
    assert mode == 0o700, (path, oct(mode))
    return directory


def test_state_dir_written(installed_host, bus):
    host = installed_host
    wait_active(host)
    bus.manager("SetPolicy", gvariant_string(POLICY_NAME), gvariant_string(POLICY_TEXT))
    state = private_dir(host, "/var/lib/mom")
    stored = [p for p in state.rglob("*") if p.is_file() and POLICY_NAME in p.name]
    assert stored, f"nothing named {POLICY_NAME} under /var/lib/mom: {list(state.rglob('*'))}"
    assert "systest_marker 7" in stored[0].read_text()


def test_policy_code_cache_written(installed_host, bus):
    # CacheDirectory=mom: the compiled policies are kept for the next start.
    host = installed_host
    wait_active(host)
    bus.manager("SetPolicy", gvariant_string(POLICY_NAME), gvariant_string(POLICY_TEXT))
    cache = private_dir(host, "/var/cache/mom")
    entries = [p for p in cache.iterdir() if p.name.endswith(".code")]
    # The analysis and the code of each policy, the one set over the bus too.
    assert len(entries) >= 2 * len(bus.get(MANAGER_INTERFACE, "PolicyNames")), \
        sorted(p.name for p in cache.iterdir())


def test_libvirtd_of_the_host_reached_on_qemu_system(installed_host, bus):
    host = installed_host
    wait_active(host)
    assert host.show("libvirtd.service", "ActiveState") == "active"
    assert bus.get(MANAGER_INTERFACE, "HypervisorURI") == "qemu:///system"
    assert host.wait_for("Connected", lambda: bus.get(MANAGER_INTERFACE, "Connected"))


def test_ksm_knobs_written_through_the_sandbox(installed_host, bus):
    if not ksm_sysfs.REAL.is_dir():
        pytest.skip(f"{ksm_sysfs.REAL} is absent: this kernel has no KSM")
    host = installed_host
    wait_active(host)
    # Values the shipped policies never pick, so what is read back was
    # written by this call (the machine's values come back afterwards:
    # installed_host restores them).
    before = {n: ksm_sysfs.real_value(n) for n in ("sleep_millisecs", "pages_to_scan")}
    wanted = {"sleep_millisecs": 1234 if before["sleep_millisecs"] != 1234 else 1235,
              "pages_to_scan": 77 if before["pages_to_scan"] != 77 else 78}

    def set_ksm(values: dict[str, int]) -> None:
        bus.call(HOST_OBJECT, f"{HOST_INTERFACE}.SetKsm",
                 "{" + ", ".join(f"'{k}': <uint32 {v}>" for k, v in values.items()) + "}")
    try:
        set_ksm(wanted)
        assert {n: ksm_sysfs.real_value(n) for n in wanted} == wanted
    finally:
        # Put them back at once, through momd as well: the kernel is shared
        # with whatever else runs on the machine meanwhile.
        set_ksm(before)
    assert {n: ksm_sysfs.real_value(n) for n in before} == before


def test_security_exposure_at_most_2(installed_host):
    out = installed_host.run(["systemd-analyze", "security", "--no-pager", "momd.service"]).stdout
    match = re.search(r"Overall exposure level for momd\.service:\s*([0-9.]+)", out)
    assert match, out[-2000:]
    assert float(match.group(1)) <= 2.0, out[-2000:]


CAP_SYS_RESOURCE = 24


def _capabilities(status: str) -> dict[str, int]:
    return {k: int(v, 16) for k, v in
            (line.split(":\t") for line in status.splitlines() if line.startswith("Cap"))}


def test_momd_runs_with_only_the_capabilities_of_its_unit(installed_host):
    host = installed_host
    pid = wait_active(host)
    status = host.run(["cat", f"/proc/{pid}/status"]).stdout
    caps = _capabilities(status)
    # CapabilityBoundingSet=CAP_SYS_RESOURCE, as far as this machine has it
    # (a machine, or a sandbox around it, may have dropped it already).
    machine = _capabilities(open("/proc/self/status").read())["CapBnd"]
    expected = (1 << CAP_SYS_RESOURCE) & machine
    assert caps["CapBnd"] == expected, status
    assert caps["CapEff"] == expected, status
    assert caps["CapAmb"] == 0
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M), status


def test_no_traceback_in_the_journal(installed_host):
    wait_active(installed_host)
    text = installed_host.run(["journalctl", "--no-pager", "-b", "-u", "momd.service"]).stdout
    assert "momd" in text
    assert "Traceback" not in text, text[-4000:]


# The watchdog test goes last: it restarts momd with a drop-in.
WATCHDOG_DROPIN = """\
# System tests: the shipped 30 s makes the test wait minutes.  The mechanism
# (WATCHDOG_USEC, pings at half of it, SIGABRT and a restart on a miss) is
# the same at any value, and momd pings at half the unit's WatchdogSec.
[Service]
WatchdogSec=6s
"""


def test_watchdog_keeps_a_healthy_momd_and_restarts_a_stopped_one(installed_host, bus):
    host = installed_host
    shipped = host.show("momd.service", "WatchdogUSec")
    assert shipped in ("30s", "30000000"), shipped
    host.run(["install", "-D", "-m", "0644", "/dev/stdin",
              "/etc/systemd/system/momd.service.d/50-systest-watchdog.conf"],
             input=WATCHDOG_DROPIN)
    try:
        host.run(["systemctl", "daemon-reload"])
        host.run(["systemctl", "restart", "momd.service"])
        assert host.show("momd.service", "WatchdogUSec") in ("6s", "6000000")
        pid = wait_active(host)
        restarts = int(host.show("momd.service", "NRestarts"))

        # Alive past three WatchdogSec: pinged, not restarted.
        host.run(["sleep", "19"], timeout=60)
        assert main_pid(host) == pid
        assert host.show("momd.service", "ActiveState") == "active"
        assert int(host.show("momd.service", "NRestarts")) == restarts
        assert bus.get(MANAGER_INTERFACE, "Version")

        # Stopped: no more pings, so systemd kills it and starts a new one.
        host.run(["kill", f"-{signal.SIGSTOP.value}", str(pid)])
        host.wait_for("a new momd after the watchdog fired", lambda: (
            main_pid(host) not in (0, pid)
            and host.show("momd.service", "ActiveState") == "active"), timeout=180)
        assert int(host.show("momd.service", "NRestarts")) == restarts + 1
        log = host.run(["journalctl", "--no-pager", "-b", "-u", "momd.service"]).stdout
        assert "Watchdog timeout" in log, log[-3000:]
        assert bus.get(MANAGER_INTERFACE, "Version")
    finally:
        host.run(["rm", "-rf", "/etc/systemd/system/momd.service.d/50-systest-watchdog.conf"])
        host.run(["systemctl", "daemon-reload"])
