"""momctl end to end: a private system bus with polkitd, momd on it, momctl
run as a process (as root, and as ``nobody`` where authorization matters).

momd runs against libvirt's test driver (a node file of four guests), with
the balloon controller only: nothing on this host is changed (momctl's
``ksm set`` is only tried with values the service or polkit refuses, or
with the current values, written back as they are).  The policy engine runs rarely (every 30 s)
so that what momctl sets is not undone by a policy before it is checked;
collection runs often so that the monitor sees changes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from momservice.cli import exitcodes
from momservice.contract import (ACTION_CONTROL_CPUTUNE, BUS_NAME, GUEST_PATH_PREFIX,
                                 MANAGER_PATH, guest_path)
from tests.helpers.momd_process import Momd, momd_config
from tests.helpers.libvirt_node import domain_xml, guest_specs, node_uri, write_node_xml
from tests.helpers.as_nobody import nobody_python, run_as_nobody
from tests.helpers.ksm_sysfs import KsmBusy, exclusive_real_ksm
from tests.helpers.private_bus import (PrivateSystemBus, mom_service_file,
                                       replaced_actions_reason, skip_reason,
                                       system_bus_with_polkit)

REPO = Path(__file__).resolve().parents[2]
GUESTS = guest_specs(4)
GiB = 1024 * 1024

_reason = skip_reason()
pytestmark = [pytest.mark.skipif(_reason is not None, reason=_reason or ""),
              pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def momd(system, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("momd")
    node = write_node_xml(tmp / "node.xml", GUESTS)
    daemon = Momd(system, momd_config(tmp, node_uri(node)), tmp / "momd.log")
    try:
        yield daemon
    finally:
        daemon.stop()


def _momctl_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "momservice.cli.momctl", *args]


def momctl(system, *args: str, input: str | None = None, timeout: float = 60,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run momctl as root with the private bus as the system bus."""
    full_env = dict(os.environ)
    full_env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    full_env.update(system.client_env() if env is None else env)
    result = subprocess.run(_momctl_argv(*args), cwd=REPO, env=full_env, input=input,
                            capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def momctl_as_nobody(system, *args: str) -> subprocess.CompletedProcess[str]:
    python = nobody_python()
    result = run_as_nobody(python.argv("-m", "momservice.cli.momctl", *args),
                           python.env(system.client_env()), timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    return result


class MonitorProcess:
    """``momctl monitor`` in the background, its frames written to a file."""

    def __init__(self, env: dict[str, str], path: Path, *args: str) -> None:
        self.path = path
        with open(path, "w") as out:
            self.process = subprocess.Popen(_momctl_argv("monitor", *args), cwd=REPO, env=env,
                                            stdout=out, stderr=subprocess.PIPE, text=True)

    def text(self) -> str:
        return self.path.read_text()

    def wait_for(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text():
            assert self.process.poll() is None, (self.process.returncode, self.text(),
                                                 self.process.stderr.read())
            assert time.monotonic() < deadline, f"no {text!r} in {self.text()!r}"
            time.sleep(0.05)

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        try:
            _, err = self.process.communicate(timeout=timeout)
        finally:
            self.kill()
        return self.process.returncode, self.text(), err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def frames(self) -> list[str]:
        return self.text().split("momctl monitor  ")[1:]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == exitcodes.OK, (result.returncode, result.stdout, result.stderr)
    assert result.stderr == ""
    return result.stdout


def failed(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("momctl: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def guest_json(system, key: str) -> dict:
    return json.loads(ok(momctl(system, "guest", key, "--json")))


# -- reading -----------------------------------------------------------------------


def test_status(system, momd):
    out = ok(momctl(system, "status"))
    assert re.search(r"^momd \S+: 4 guests, controllers Balloon", out, re.M), out
    assert "(connected)" in out and "test://" in out
    assert "00-defines, 02-balloon, 03-ksm" in out
    assert re.search(r"^Memory +total \d+\.\d [MGT]iB, free ", out, re.M), out

    data = json.loads(ok(momctl(system, "status", "--json")))
    assert data["manager"]["GuestCount"] == 4
    assert data["manager"]["Connected"] is True
    assert data["manager"]["HypervisorURI"].startswith("test://")
    assert data["manager"]["Controllers"] == ["Balloon"]
    assert data["host"]["MemTotal"] > 0
    assert isinstance(data["host"]["MemoryPressureSome"], float)


def test_status_with_address_option(system, momd):
    # --address, not the environment, names the bus; before or after the command.
    address = system.address
    no_env = {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent/socket"}
    assert "4 guests" in ok(momctl(system, "--address", address, "status", env=no_env))
    assert "4 guests" in ok(momctl(system, "status", "--address", address, env=no_env))
    failed(momctl(system, "status", env=no_env), exitcodes.NOT_RUNNING)


def test_guests(system, momd):
    out = ok(momctl(system, "guests"))
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "CURRENT", "MAX", "MIN", "FREE", "SWAP", "IN/OUT",
                                "TARGET"]
    assert [line.split()[0] for line in lines[1:]] == [g.name for g in GUESTS]
    # guest-0003: 4 GiB maximum, not ballooned, 640 MiB guaranteed.
    row = lines[4].split()
    assert row[:7] == ["guest-0003", "4.0", "GiB", "4.0", "GiB", "640.0", "MiB"]

    data = json.loads(ok(momctl(system, "guests", "--json")))
    assert [g["Name"] for g in data] == [g.name for g in GUESTS]
    for got, spec in zip(data, GUESTS):
        assert got["UUID"] == spec.uuid
        assert got["path"] == guest_path(spec.uuid)
        assert got["BalloonMaximum"] == spec.memory_kib


def test_guest_by_name_and_uuid(system, momd):
    spec = GUESTS[2]
    out = ok(momctl(system, "guest", spec.name))
    assert out.splitlines()[0] == f"{spec.name}  {guest_path(spec.uuid)}"
    assert re.search(rf"^  UUID +{spec.uuid}$", out, re.M), out
    assert re.search(r"^  BalloonMaximum +3\.0 GiB \(3145728 KiB\)$", out, re.M), out
    assert "Statistics:" in out and "balloon_max" in out

    by_uuid = guest_json(system, spec.uuid.upper())
    assert by_uuid["Name"] == spec.name
    assert by_uuid["BalloonMaximum"] == spec.memory_kib
    assert by_uuid["Statistics"]["balloon_max"] == spec.memory_kib


def test_unknown_guest_is_not_found(system, momd):
    err = failed(momctl(system, "guest", "no-such-guest"), exitcodes.NOT_FOUND)
    assert "no-such-guest" in err
    failed(momctl(system, "balloon", "no-such-guest", "1G"), exitcodes.NOT_FOUND)


def test_ksm_show(system, momd):
    out = ok(momctl(system, "ksm"))
    assert re.search(r"^KsmRun +\d \((stopped|running|unmerging)\)$", out, re.M), out
    data = json.loads(ok(momctl(system, "ksm", "--json")))
    assert {"KsmRun", "KsmPagesToScan", "KsmSleepMillisecs"} <= set(data)
    assert all(k.startswith("Ksm") for k in data)


def test_ksm_set_checks(system, momd):
    err = failed(momctl(system, "ksm", "set", "run=3"), exitcodes.INVALID_ARGUMENT)
    assert "invalid argument" in err
    failed(momctl(system, "ksm", "set", "colour=3"), exitcodes.INVALID_ARGUMENT)
    # Writing what is already there changes nothing on this host; where
    # /sys is read-only (a container) the kernel's refusal must be "failed".
    # Another test run must not change them between the reading and the
    # writing back: this would undo what it set.
    try:
        with exclusive_real_ksm():
            current = json.loads(ok(momctl(system, "ksm", "--json")))
            result = momctl(system, "ksm", "set", f"run={current['KsmRun']}",
                            f"pages_to_scan={current['KsmPagesToScan']}")
    except KsmBusy as e:
        pytest.skip(str(e))
    if os.access("/sys/kernel/mm/ksm/run", os.W_OK) and result.returncode == exitcodes.OK:
        assert ok(result).startswith("KSM set: run=")
    else:
        assert "failed: " in failed(result, exitcodes.FAILED)


# -- policies ----------------------------------------------------------------------


def test_policy_list_and_show(system, momd):
    out = ok(momctl(system, "policy", "list"))
    assert [line.split()[0] for line in out.splitlines()] == \
        ["00-defines", "02-balloon", "03-ksm"]
    data = json.loads(ok(momctl(system, "policy", "list", "--json")))
    assert data["active"] == ["00-defines", "02-balloon", "03-ksm"]
    text = (REPO / "policies" / "02-balloon.policy").read_text()
    assert data["policies"]["02-balloon"] == text
    assert ok(momctl(system, "policy", "show", "02-balloon")) == text
    shown = json.loads(ok(momctl(system, "policy", "show", "02-balloon", "--json")))
    assert shown == {"name": "02-balloon", "text": text}
    failed(momctl(system, "policy", "show", "nope"), exitcodes.NOT_FOUND)


def test_policy_set_delete_reload_reset(system, momd, tmp_path):
    source = tmp_path / "50-extra.policy"
    source.write_text("(defvar extra-value 42)\n")
    assert "policy 50-extra set" in ok(momctl(system, "policy", "set", "50-extra",
                                               str(source)))
    assert ok(momctl(system, "policy", "show", "50-extra")) == "(defvar extra-value 42)\n"
    ok(momctl(system, "policy", "set", "60-stdin", "-", input="(defvar from-stdin 1)\n"))
    names = json.loads(ok(momctl(system, "policy", "list", "--json")))["active"]
    assert "50-extra" in names and "60-stdin" in names

    bad = tmp_path / "bad.policy"
    bad.write_text("(defvar x 1)\n\n(if 1 2)\n")
    err = failed(momctl(system, "policy", "set", "70-bad", str(bad)), exitcodes.POLICY_ERROR)
    assert "line 3" in err or ":3" in err, err
    assert "70-bad" not in json.loads(ok(momctl(system, "policy", "list", "--json")))["active"]
    huge = tmp_path / "huge.policy"
    huge.write_text("(defvar x 1)\n(defvar y (<< 1 100000))\n")
    err = failed(momctl(system, "policy", "set", "80-huge", str(huge)), exitcodes.POLICY_ERROR)
    assert "80-huge" in err and "line 2" in err, err
    assert "80-huge" not in json.loads(ok(momctl(system, "policy", "list", "--json")))["active"]
    failed(momctl(system, "policy", "set", "x", str(tmp_path / "missing")),
           exitcodes.INVALID_ARGUMENT)

    assert "deleted" in ok(momctl(system, "policy", "delete", "50-extra"))
    failed(momctl(system, "policy", "show", "50-extra"), exitcodes.NOT_FOUND)
    failed(momctl(system, "policy", "delete", "50-extra"), exitcodes.NOT_FOUND)
    # A policy that comes from a file cannot be deleted over the bus.
    failed(momctl(system, "policy", "delete", "00-defines"), exitcodes.INVALID_ARGUMENT)

    assert "reloaded" in ok(momctl(system, "policy", "reload"))
    assert "60-stdin" in json.loads(ok(momctl(system, "policy", "list", "--json")))["active"]
    assert "reset" in ok(momctl(system, "policy", "reset"))
    assert json.loads(ok(momctl(system, "policy", "list", "--json")))["active"] == \
        ["00-defines", "02-balloon", "03-ksm"]


def test_offline_policy_tools_still_work(system, tmp_path):
    good = tmp_path / "good.policy"
    good.write_text("(defvar x 1)\n")
    # No bus at all: the offline tools do not need one.
    result = momctl(system, "policy", "check", str(good),
                    env={"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent"})
    assert "1 policies OK" in ok(result)


# -- parameters --------------------------------------------------------------------


def test_params(system, momd):
    ok(momctl(system, "params", "set", "mctl_int=42", "mctl_float=0.25", "mctl_bool=true",
              "mctl_str=hello", 'mctl_quoted="17"'))
    data = json.loads(ok(momctl(system, "params", "--json")))
    assert data["mctl_int"] == 42 and isinstance(data["mctl_int"], int)
    assert data["mctl_float"] == 0.25
    assert data["mctl_bool"] is True
    assert data["mctl_str"] == "hello"
    assert data["mctl_quoted"] == "17"
    out = ok(momctl(system, "params"))
    assert re.search(r"^mctl_float += 0\.25$", out, re.M), out
    assert re.search(r'^mctl_str += "hello"$', out, re.M), out
    # A merge: the others stay.
    ok(momctl(system, "params", "set", "mctl_int=7"))
    data = json.loads(ok(momctl(system, "params", "--json")))
    assert data["mctl_int"] == 7 and data["mctl_str"] == "hello"
    failed(momctl(system, "params", "set", "mctl_x=[1]"), exitcodes.INVALID_ARGUMENT)


# -- balloon and evaluate ------------------------------------------------------------


def test_balloon(system, momd):
    spec = GUESTS[1]   # 2 GiB maximum, no guarantee
    out = ok(momctl(system, "balloon", spec.name, "1.5GiB"))
    assert out == f"{spec.name}: balloon target set to 1.5 GiB (1572864 KiB)\n"
    deadline = time.monotonic() + 10
    while True:
        got = guest_json(system, spec.uuid)
        if got["BalloonTarget"] == 1572864 or got["BalloonCurrent"] == 1572864:
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.2)
    ok(momctl(system, "balloon", spec.uuid, "1048576"))

    err = failed(momctl(system, "balloon", spec.name, "3G"), exitcodes.INVALID_ARGUMENT)
    assert "invalid argument" in err
    failed(momctl(system, "balloon", spec.name, "lots"), exitcodes.INVALID_ARGUMENT)


def test_cputune(system, momd):
    spec = GUESTS[0]
    # This momd does not configure GuestCpuTune: momctl says so.
    out = ok(momctl(system, "cputune", spec.name))
    assert out.startswith(f"{spec.name}: no CPU tuning figures") and "GuestCpuTune" in out
    assert set(json.loads(ok(momctl(system, "cputune", spec.uuid, "--json")))) == {
        "VcpuQuota", "VcpuPeriod", "VcpuUserLimit", "VcpuCount"}
    # libvirt's test driver has no vCPU scheduler parameters: the service's refusal.
    result = momctl(system, "cputune", spec.name, "quota=50000", "period=100000")
    if result.returncode == exitcodes.ACCESS_DENIED and replaced_actions_reason(
            ACTION_CONTROL_CPUTUNE):
        pytest.skip(replaced_actions_reason(ACTION_CONTROL_CPUTUNE))
    err = failed(result, exitcodes.FAILED)
    assert "failed" in err
    err = failed(momctl(system, "cputune", spec.name, "quota=500"), exitcodes.INVALID_ARGUMENT)
    assert "1000..17592186044415" in err
    failed(momctl(system, "cputune", spec.name, "quota=lots"), exitcodes.INVALID_ARGUMENT)
    failed(momctl(system, "cputune", "no-such-guest", "quota=-1"), exitcodes.NOT_FOUND)


def test_evaluate(system, momd):
    out = ok(momctl(system, "evaluate", "--dry-run"))
    assert out.startswith("dry run: nothing applied\n")
    data = json.loads(ok(momctl(system, "evaluate", "--dry-run", "--json")))
    assert data["dry_run"] is True
    names = {o["name"] for o in data["objects"]}
    paths = {o["path"] for o in data["objects"]}
    # Names, not only paths: every guest path is named after its guest.
    for o in data["objects"]:
        if o["path"].startswith(GUEST_PATH_PREFIX):
            assert o["name"] in {g.name for g in GUESTS}
    assert names - {"host"} <= {g.name for g in GUESTS}
    assert all(p.startswith(MANAGER_PATH + "/") for p in paths)
    for o in data["objects"]:
        if o["name"] in out:
            assert f"\n{o['name']}:\n" in out

    out = ok(momctl(system, "evaluate"))
    assert out.startswith("evaluated and applied\n")
    status = json.loads(ok(momctl(system, "status", "--json")))["manager"]
    assert status["LastEvaluation"] > 0


# -- monitor -----------------------------------------------------------------------


def test_monitor_for_some_seconds(system, momd):
    started = time.monotonic()
    out = ok(momctl(system, "monitor", "--seconds", "2", "--interval", "0.2"))
    assert 1.5 < time.monotonic() - started < 20
    assert "\x1b[" not in out          # not a terminal: plain appended frames
    frames = out.split("momctl monitor  ")[1:]
    assert len(frames) >= 2, out       # host statistics change every 0.3 s
    for frame in frames:
        for spec in GUESTS:
            assert spec.name in frame


def test_monitor_stops_on_sigint(system, momd, tmp_path):
    monitor = MonitorProcess(system.env(), tmp_path / "monitor.out")
    try:
        monitor.wait_for("guest-0003")
        monitor.process.send_signal(signal.SIGINT)
        code, out, err = monitor.finish(15)
    finally:
        monitor.kill()
    assert code == exitcodes.OK, err
    assert err == ""
    assert out.startswith("momctl monitor  ") and "guest-0000" in out


def test_monitor_follows_guests_coming_and_going(private_libvirtd, tmp_path):
    """InterfacesAdded / InterfacesRemoved: a guest started and destroyed on a
    private libvirtd appears in the monitor, then disappears."""
    import libvirt

    uri = private_libvirtd.uri()
    spec = guest_specs(1, prefix="newcomer")[0]
    # A bus of its own: the module's momd owns the name on the shared one.
    with system_bus_with_polkit(tmp_path / "bus", polkit=False) as bus:
        daemon = Momd(bus, momd_config(tmp_path, uri), tmp_path / "momd.log")
        conn = libvirt.open(uri)
        monitor = None
        try:
            monitor = MonitorProcess(bus.env(), tmp_path / "monitor.out",
                                     "--seconds", "12", "--interval", "0.1")
            monitor.wait_for("NAME ")
            domain = conn.createXML(domain_xml(spec), 0)
            monitor.wait_for(spec.name)
            domain.destroy()
            time.sleep(2)
            monitor.process.send_signal(signal.SIGINT)
            code, out, err = monitor.finish()
        finally:
            if monitor is not None:
                monitor.kill()
            conn.close()
            daemon.stop()
    assert code == exitcodes.OK, err
    has = [spec.name in frame for frame in monitor.frames()]
    appeared = has.index(True)
    assert appeared > 0 and not any(has[:appeared])
    assert has[-1] is False, monitor.frames()[-1]


def test_monitor_waits_for_a_restarted_service(tmp_path):
    """momd leaves the bus and comes back: the monitor says so, then goes on."""
    node = write_node_xml(tmp_path / "node.xml", GUESTS[:2])
    config = momd_config(tmp_path, node_uri(node))
    with system_bus_with_polkit(tmp_path / "bus", polkit=False) as bus:
        daemon = Momd(bus, config, tmp_path / "momd1.log")
        monitor = None
        try:
            monitor = MonitorProcess(bus.env(), tmp_path / "monitor.out",
                                     "--seconds", "30", "--interval", "0.1")
            monitor.wait_for("guest-0001")
            daemon.stop()
            monitor.wait_for("momd is not running")
            daemon = Momd(bus, config, tmp_path / "momd2.log")
            deadline = time.monotonic() + 20
            while "momd is not running" in monitor.frames()[-1]:
                assert time.monotonic() < deadline, monitor.frames()[-1]
                time.sleep(0.1)
            time.sleep(1)
            monitor.process.send_signal(signal.SIGINT)
            code, out, err = monitor.finish()
        finally:
            if monitor is not None:
                monitor.kill()
            daemon.stop()
    assert code == exitcodes.OK, err
    frames = monitor.frames()
    down = ["momd is not running" in frame for frame in frames]
    after = frames[down.index(True) + 1:]
    assert after and "guest-0001" in after[-1] and "2 guests" in after[-1], after[-1:]


# -- failures: no service, no permission ---------------------------------------------


def test_not_running(tmp_path):
    with PrivateSystemBus(tmp_path / "bus", polkit_conf=False) as bus:
        result = momctl(bus, "status")
        err = failed(result, exitcodes.NOT_RUNNING)
        assert "momd is not running" in err
        failed(momctl(bus, "guests", "--json"), exitcodes.NOT_RUNNING)
        failed(momctl(bus, "balloon", "x", "1G"), exitcodes.NOT_RUNNING)
        # The bus itself is not there at all.
        result = momctl(bus, "status", "--address", f"unix:path={tmp_path}/none")
        assert "cannot connect" in failed(result, exitcodes.NOT_RUNNING)


def test_activation_failure_is_not_running(tmp_path):
    files = {f"{BUS_NAME}.service": mom_service_file("/bin/false")}
    with PrivateSystemBus(tmp_path / "bus", polkit_conf=False, service_files=files) as bus:
        err = failed(momctl(bus, "status"), exitcodes.NOT_RUNNING)
        assert "momd" in err


def test_nobody_may_read_but_not_change(system, momd):
    assert "4 guests" in ok(momctl_as_nobody(system, "status"))
    assert "guest-0001" in ok(momctl_as_nobody(system, "guests"))
    for args in (("balloon", "guest-0001", "1G"),
                 ("policy", "set", "80-nobody", "/dev/null"),
                 ("policy", "reload"),
                 ("params", "set", "x=1"),
                 ("ksm", "set", "run=0"),
                 ("evaluate", "--dry-run")):
        err = failed(momctl_as_nobody(system, *args), exitcodes.ACCESS_DENIED)
        assert "root" in err and "agent" in err
    assert "80-nobody" not in ok(momctl(system, "policy", "list"))
    assert "x" not in json.loads(ok(momctl(system, "params", "--json")))
