"""momd on a systemd host with a real guest, db1, under the host's own libvirtd
(``libvirt-daemon-system``, ``qemu:///system``): what the journal says about it,
and polkit on the host's real system bus, for both install ways.

The guest is the e2e one (tests/helpers/guest_image.py: Debian's kernel and
a busybox initramfs, no disk, no network), defined and started with virsh as
an administrator would.  Its kernel and initramfs are copied into the host's
/var/lib/libvirt/boot: the system libvirtd runs QEMU as libvirt-qemu, which
cannot read the cache under /root (and libvirt would chown what it can).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from momservice.contract import (BUS_NAME, GUEST_INTERFACE, HOST_INTERFACE, MANAGER_INTERFACE,
                                 guest_path)
from tests.helpers import ksm_sysfs
from tests.helpers.guest_image import (GuestImage, GuestImageError, SerialConsole, domain_xml,
                                       ensure_guest_image)
from tests.helpers.guest_image import skip_reason as guest_skip_reason
from tests.system.momd_on_host import (HOST_OBJECT, MANAGER, Bus, gvariant_string,
                                       wait_active)

pytestmark = pytest.mark.timeout(900)

GUEST = "db1"
GUEST_UUID = "6d6f6d00-7379-7374-0000-0000000000db"
GUEST_OBJECT = guest_path(GUEST_UUID)
GUEST_MIB = 512
EXAMPLE_RULE = Path(__file__).resolve().parents[2] / "polkit" / \
    "50-org.ovirt.mom1-manage.rules.example"
RULE_GROUP = "momadmin"
# libvirt: the namespace's cgroup2 has no controllers (the machine's are bound
# to its cgroup v1 hierarchies, or kept by its own manager); libvirt would
# look for the v1 ones it sees in /proc/self/cgroup and fail to start QEMU.
QEMU_CONF_LINE = "cgroup_controllers = [ ]\n"


def virsh(host, *args: str, check: bool = True):
    return host.run(["virsh", "-c", "qemu:///system", *args], check=check, timeout=180)


@pytest.fixture(scope="module")
def db1(installed_host):
    """The guest db1 running under the host's libvirtd, managed by momd."""
    reason = guest_skip_reason()
    if reason:
        pytest.skip(reason)
    host = installed_host
    try:
        image = ensure_guest_image()
    except GuestImageError as e:
        pytest.skip(f"no guest image: {e}")
    boot = host.path("/var/lib/libvirt/boot")
    boot.mkdir(parents=True, exist_ok=True)
    shutil.copy2(image.kernel, boot / "vmlinuz")
    shutil.copy2(image.initrd, boot / "initrd.cpio.gz")
    with open(host.path("/etc/libvirt/qemu.conf"), "a") as conf:
        conf.write(f"\n# mom system tests\n{QEMU_CONF_LINE}")
    host.run(["systemctl", "restart", "libvirtd.service"])
    inner = GuestImage(Path("/var/lib/libvirt/boot/vmlinuz"),
                       Path("/var/lib/libvirt/boot/initrd.cpio.gz"),
                       image.kernel_package, image.kernel_version)
    serial = Path(f"/var/log/libvirt/qemu/{GUEST}-serial.log")
    host.run(["install", "-m", "0644", "/dev/stdin", "/tmp/db1.xml"],
             input=domain_xml(GUEST, GUEST_UUID, inner, serial, memory_mib=GUEST_MIB))
    virsh(host, "define", "/tmp/db1.xml")
    virsh(host, "start", GUEST)
    try:
        console = SerialConsole(host.path(str(serial)))
        host.wait_for("db1 booted", lambda: console.memtotal(), timeout=300)
        # momd may be running already (the .deb starts it): either way it
        # must pick the guest up.
        bus = Bus(host)
        bus.get(MANAGER_INTERFACE, "Version")
        wait_active(host)
        host.wait_for("db1 on the bus", lambda: GUEST_OBJECT in host.run(
            ["busctl", "tree", "--list", BUS_NAME]).stdout, timeout=120)
        yield host
    finally:
        virsh(host, "destroy", GUEST, check=False)
        virsh(host, "undefine", GUEST, check=False)


# --------------------------------------------------------------------------
# journald


def momd_journal(host, *matches: str) -> list[dict]:
    """``journalctl -u momd MATCH...`` of this boot, as JSON entries."""
    return host.journal(*matches, unit="momd.service")


def test_momds_entries_are_under_its_unit(db1):
    entries = momd_journal(db1)
    own = [e for e in entries if e.get("_COMM") == "momd" or e.get("SYSLOG_IDENTIFIER") == "momd"]
    assert own, entries[-5:]
    assert all(e.get("_SYSTEMD_UNIT") == "momd.service" for e in own)


def test_guest_messages_carry_guest_name_and_uuid(db1):
    # Moving db1's balloon by hand (as root) is a guest-related message too.
    bus = Bus(db1)
    target = (GUEST_MIB - 64) * 1024
    bus.call(GUEST_OBJECT, f"{GUEST_INTERFACE}.SetBalloonTarget", f"uint64 {target}")
    db1.wait_for("BalloonTarget", lambda: bus.get(GUEST_INTERFACE, "BalloonTarget",
                                                  path=GUEST_OBJECT) == target)

    entries = db1.wait_for("entries with GUEST_NAME=db1", lambda: momd_journal(db1, f"GUEST_NAME={GUEST}"))

    assert all(e.get("GUEST_UUID") == GUEST_UUID for e in entries), entries
    assert all(e.get("_SYSTEMD_UNIT") == "momd.service" for e in entries)
    assert any(GUEST in e.get("MESSAGE", "") for e in entries)
    # The match selects: another name selects none of them.
    assert not momd_journal(db1, "GUEST_NAME=no-such-guest")


def test_policy_errors_carry_mom_policy(db1):
    bus = Bus(db1)
    names = bus.get(MANAGER_INTERFACE, "PolicyNames")
    db1.run(["install", "-D", "-m", "0644", "/dev/stdin", "/etc/mom/policy.d/60-broken.policy"],
            input="(defvar fine 1)\n(defvar broken (+ 1\n")
    try:
        db1.run(["systemctl", "reload", "momd.service"])
        entries = db1.wait_for("an entry with MOM_POLICY=60-broken",
                               lambda: momd_journal(db1, "MOM_POLICY=60-broken"))
        assert all(e.get("_SYSTEMD_UNIT") == "momd.service" for e in entries)
        # The last good set stays active.
        assert bus.get(MANAGER_INTERFACE, "PolicyNames") == names
    finally:
        db1.run(["rm", "-f", "/etc/mom/policy.d/60-broken.policy"])
        db1.run(["systemctl", "reload", "momd.service"])


def test_no_traceback_in_momds_journal(db1):
    text = db1.run(["journalctl", "--no-pager", "-b", "-u", "momd.service"]).stdout
    assert GUEST in text
    assert "Traceback" not in text, text[-4000:]


# --------------------------------------------------------------------------
# polkit on the real system bus

def _changes(real_ksm: dict[str, int]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(object, method, GVariant arguments) of every call that changes something."""
    ksm = ", ".join(f"'{k}': <uint32 {v}>" for k, v in real_ksm.items())
    return [
        (MANAGER, f"{MANAGER_INTERFACE}.SetPolicy",
         (gvariant_string("intruder"), gvariant_string("(defvar intruder 1)"))),
        (MANAGER, f"{MANAGER_INTERFACE}.DeletePolicy", (gvariant_string("02-balloon"),)),
        (MANAGER, f"{MANAGER_INTERFACE}.ReloadPolicies", ()),
        (MANAGER, f"{MANAGER_INTERFACE}.ResetPolicies", ()),
        (MANAGER, f"{MANAGER_INTERFACE}.SetParameters", ("{'balloonEnabled': <false>}",)),
        (MANAGER, f"{MANAGER_INTERFACE}.EvaluateNow", ("false",)),
        (MANAGER, "org.freedesktop.DBus.Properties.Set",
         (f"'{MANAGER_INTERFACE}'", "'Verbosity'", "<'debug'>")),
        (HOST_OBJECT, f"{HOST_INTERFACE}.SetKsm", (f"{{{ksm}}}",)),
        (GUEST_OBJECT, f"{GUEST_INTERFACE}.SetBalloonTarget",
         (f"uint64 {(GUEST_MIB - 32) * 1024}",)),
    ]


REFUSED = ("org.freedesktop.DBus.Error.AccessDenied",
           "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired")


def _state(bus: Bus) -> dict:
    manager = MANAGER_INTERFACE
    return {
        "policies": bus.manager("GetPolicies").stdout,
        "parameters": bus.get(manager, "Parameters"),
        "verbosity": bus.get(manager, "Verbosity"),
        "balloon_target": bus.get(GUEST_INTERFACE, "BalloonTarget", path=GUEST_OBJECT),
    }


def _ksm_now() -> dict[str, int]:
    if not ksm_sysfs.REAL.is_dir():
        return {}
    return {n: ksm_sysfs.real_value(n) for n in ("pages_to_scan", "sleep_millisecs")}


def test_unprivileged_caller_refused_every_change(db1):
    bus = Bus(db1)
    # Reading is open to everyone: nobody reaches momd at all.
    assert bus.get(MANAGER_INTERFACE, "Version", user="nobody")
    before, ksm_before = _state(bus), _ksm_now()
    asked = {k: v + 11 for k, v in ksm_before.items()} or {"pages_to_scan": 99}

    answers = {}
    for path, method, args in _changes(asked):
        result = bus.call(path, method, *args, user="nobody", check=False)
        answers[method] = (result.returncode, result.stderr.strip())

    wrong = {m: a for m, a in answers.items()
             if a[0] == 0 or not any(name in a[1] for name in REFUSED)}
    assert not wrong, wrong
    assert _state(bus) == before
    assert _ksm_now() == ksm_before


def test_example_rule_lets_its_group_manage_policies(db1):
    bus = Bus(db1)
    user = "momsystest"
    db1.run(["groupadd", "--system", RULE_GROUP])
    db1.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             "--groups", RULE_GROUP, user])
    db1.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             "momoutsider"])
    name = gvariant_string("by-group")
    text = gvariant_string("(defvar by_group 1)")
    # Not installed yet: the group is nothing to polkit.
    refused = bus.manager("SetPolicy", name, text, user=user, check=False)
    assert refused.returncode != 0 and any(n in refused.stderr for n in REFUSED), refused.stderr

    db1.run(["install", "-m", "0644", "/dev/stdin",
             "/etc/polkit-1/rules.d/50-org.ovirt.mom1-manage.rules"],
            input=EXAMPLE_RULE.read_text())
    try:
        # polkitd reloads its rules on its own, asynchronously.
        db1.wait_for("the rule in force", lambda: bus.manager(
            "SetPolicy", name, text, user=user, check=False).returncode == 0, timeout=60)
        assert "by-group" in bus.get(MANAGER_INTERFACE, "PolicyNames")
        bus.manager("DeletePolicy", name, user=user)
        assert "by-group" not in bus.get(MANAGER_INTERFACE, "PolicyNames")
        # Outside the group, or beyond manage-policy: still refused.
        outsider = bus.manager("SetPolicy", name, text, user="momoutsider", check=False)
        assert outsider.returncode != 0 and any(n in outsider.stderr for n in REFUSED)
        balloon = bus.call(GUEST_OBJECT, f"{GUEST_INTERFACE}.SetBalloonTarget",
                           f"uint64 {(GUEST_MIB - 32) * 1024}", user=user, check=False)
        assert balloon.returncode != 0 and any(n in balloon.stderr for n in REFUSED)
    finally:
        db1.run(["rm", "-f", "/etc/polkit-1/rules.d/50-org.ovirt.mom1-manage.rules"])
