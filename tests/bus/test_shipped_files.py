"""The files installed for the bus, polkit and systemd, and ``make install``."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from momservice.contract import ACTIONS
from momservice.contract import BUS_NAME as MOM

REPO = Path(__file__).resolve().parents[2]
BUS_CONF = REPO / "dbus" / "org.ovirt.mom1.conf"
SERVICE_FILE = REPO / "dbus" / "org.ovirt.mom1.service"
POLICY = REPO / "polkit" / "org.ovirt.mom1.policy"
UNIT = REPO / "systemd" / "momd.service"
COCKPIT_DIR = REPO / "cockpit"


def _unit_entries(path: Path) -> dict[str, list[tuple[str, str]]]:
    """{section: [(key, value), ...]}: systemd units repeat keys, so a list."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path}: {raw!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: {raw!r} is not key=value"
        current.append((key.strip(), value.strip()))
    return sections


def _values(entries: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in entries if k == key]


def _one(entries: list[tuple[str, str]], key: str) -> str:
    found = _values(entries, key)
    assert len(found) == 1, f"{key}: {found}"
    return found[0]


# --------------------------------------------------------------------------
# dbus/org.ovirt.mom1.conf


def test_bus_conf_only_root_owns_and_everyone_sends():
    root = ET.parse(BUS_CONF).getroot()
    assert root.tag == "busconfig"
    owners, sends, receives = [], [], []
    for policy in root.iter("policy"):
        who = policy.get("user") or policy.get("group") or policy.get("context")
        for rule in policy:
            if rule.get("own") or rule.get("own_prefix"):
                owners.append((rule.tag, who, rule.get("own") or rule.get("own_prefix")))
            if rule.get("send_destination"):
                sends.append((rule.tag, who, dict(rule.attrib)))
            if rule.get("receive_sender"):
                receives.append((rule.tag, who, dict(rule.attrib)))
    assert owners == [("allow", "root", MOM)]
    # One unrestricted allow: every interface, member and object of the name.
    assert sends == [("allow", "default", {"send_destination": MOM})]
    assert receives == [("allow", "default", {"receive_sender": MOM})]


# --------------------------------------------------------------------------
# dbus/org.ovirt.mom1.service


def test_activation_file_hands_over_to_systemd():
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read_string(SERVICE_FILE.read_text())
    section = parser["D-BUS Service"]
    assert section["Name"] == MOM
    assert section["Exec"] == "/bin/false"
    assert section["User"] == "root"
    assert section["SystemdService"] == "momd.service"


# --------------------------------------------------------------------------
# polkit/org.ovirt.mom1.policy


def test_polkit_policy_has_the_three_actions():
    root = ET.parse(POLICY).getroot()
    assert root.tag == "policyconfig"
    actions = {a.get("id"): a for a in root.findall("action")}
    assert sorted(actions) == sorted(ACTIONS)
    for action_id, action in actions.items():
        assert (action.findtext("description") or "").strip(), action_id
        assert (action.findtext("message") or "").strip(), action_id
        defaults = action.find("defaults")
        assert defaults is not None, action_id
        assert {d.tag: d.text for d in defaults} == {
            "allow_any": "auth_admin",
            "allow_inactive": "auth_admin",
            "allow_active": "auth_admin_keep",
        }, action_id


# --------------------------------------------------------------------------
# systemd/momd.service


def test_unit_is_a_dbus_service_with_watchdog_and_sandbox():
    unit = _unit_entries(UNIT)
    service, install = unit["Service"], unit["Install"]
    assert _one(service, "Type") == "dbus"
    assert _one(service, "BusName") == MOM
    assert _one(service, "ExecStart") == "/usr/bin/momd"
    assert _one(service, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert _one(service, "NotifyAccess") == "main"  # else Type=dbus drops WATCHDOG=1
    assert _one(service, "WatchdogSec") == "30"
    assert _one(service, "Restart") == "on-failure"
    assert _one(service, "ProtectSystem") == "strict"
    rw = [p.lstrip("-") for v in _values(service, "ReadWritePaths") for p in v.split()]
    assert "/sys/kernel/mm/ksm" in rw and "/var/lib/mom" in rw
    assert _one(service, "StateDirectory") == "mom"
    # ProtectKernelTunables= would make /sys/kernel/mm/ksm read-only.
    assert _values(service, "ProtectKernelTunables") in ([], ["no"])
    assert _one(service, "CapabilityBoundingSet") == "CAP_SYS_RESOURCE"
    assert set(_one(service, "RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_NETLINK"}
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges", "MemoryDenyWriteExecute",
                "ProtectKernelModules", "ProtectControlGroups", "RestrictSUIDSGID"):
        assert _one(service, key) == "yes", key
    assert _one(install, "Alias") == "dbus-org.ovirt.mom1.service"
    assert "ksmtuned.service" in _one(unit["Unit"], "Conflicts").split()
    after = _one(unit["Unit"], "After").split()
    assert "libvirtd.service" in after and "virtqemud.service" in after


def _substituted_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at a binary that exists here."""
    momd = Path(sys.executable).parent / "momd"
    if not momd.exists():
        momd = Path(shutil.which("true") or "/bin/true")
    text = UNIT.read_text().replace("ExecStart=/usr/bin/momd", f"ExecStart={momd}")
    copy = tmp_path / "momd.service"
    copy.write_text(text)
    return copy


def test_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run([analyze, "verify", str(_substituted_unit(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # verify reports unknown keys and bad values as warnings, still exit 0.
    assert "Unknown key" not in result.stderr, result.stderr
    assert "Failed to parse" not in result.stderr, result.stderr


def test_systemd_analyze_security_rates_it_ok(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run([analyze, "security", "--offline=yes", "--threshold=30",
                             str(_substituted_unit(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    if "--offline" in result.stderr and result.returncode != 0:
        pytest.skip("this systemd-analyze has no --offline")
    assert result.returncode == 0, result.stdout + result.stderr
    overall = [line for line in result.stdout.splitlines() if "Overall exposure" in line]
    assert overall, result.stdout
    score = float(overall[0].split(":")[1].split()[0])
    assert score <= 2.0, overall[0]


# --------------------------------------------------------------------------
# make install


def test_make_install_puts_every_file_in_place(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dest = tmp_path / "root"
    result = subprocess.run(
        ["make", "--no-print-directory", "install", f"DESTDIR={dest}", "PREFIX=/usr",
         f"INSTALL_PYTHON={sys.executable}", "UNITDIR=/usr/lib/systemd/system"],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    expected = {
        "usr/share/dbus-1/system.d/org.ovirt.mom1.conf": BUS_CONF,
        "usr/share/dbus-1/system-services/org.ovirt.mom1.service": SERVICE_FILE,
        "usr/share/polkit-1/actions/org.ovirt.mom1.policy": POLICY,
    }
    for relative, source in expected.items():
        installed = dest / relative
        assert installed.read_bytes() == source.read_bytes(), relative
        assert installed.stat().st_mode & 0o777 == 0o644, relative
    unit = dest / "usr/lib/systemd/system/momd.service"
    assert _one(_unit_entries(unit)["Service"], "ExecStart") == "/usr/bin/momd"
    assert unit.stat().st_mode & 0o777 == 0o644
    for script in ("momd", "momctl"):
        assert os.access(dest / "usr/bin" / script, os.X_OK), script
    examples = dest / "usr/share/doc/mom/examples"
    for example in (REPO / "polkit" / "50-org.ovirt.mom1-manage.rules.example",
                    REPO / "contrib" / "grafana" / "mom-dashboard.json"):
        installed = examples / example.name
        assert installed.read_bytes() == example.read_bytes(), example.name
        assert installed.stat().st_mode & 0o777 == 0o644, example.name
    packages = list(dest.glob("usr/lib/python3*/*-packages/momservice/momd.py"))
    assert packages, sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))[:50]
    shipped = dest / "usr/share/mom/policies"
    assert sorted(p.name for p in shipped.iterdir()) == \
        sorted(p.name for p in (REPO / "policies").glob("*.policy")) + ["mom"]
    # The Cockpit page, every file of cockpit/ as it is.
    page = dest / "usr/share/cockpit/mom"
    assert sorted(p.name for p in page.iterdir()) == sorted(p.name for p in COCKPIT_DIR.iterdir())
    for path in page.iterdir():
        assert path.read_bytes() == (COCKPIT_DIR / path.name).read_bytes(), path.name
        assert path.stat().st_mode & 0o777 == 0o644, path.name
    # MoM's optional set: its own balloon policy, the rest the defaults'
    # files, so that selecting it changes the balloon algorithm only.
    mom = shipped / "mom"
    assert sorted(p.name for p in mom.iterdir()) == \
        sorted(p.name for p in (REPO / "policies" / "mom").glob("*.policy"))
    for path in mom.iterdir():
        source = REPO / "policies" / "mom" / path.name
        assert path.read_bytes() == source.read_bytes(), path.name
        assert path.is_symlink() == source.is_symlink(), path.name


def test_make_install_substitutes_the_prefix(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dest = tmp_path / "root"
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "install", f"DESTDIR={dest}",
         "PREFIX=/opt/mom", "UNITDIR=/etc/systemd/system"],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ExecStart=/opt/mom/bin/momd" in result.stdout
    assert f"{dest}/etc/systemd/system/momd.service" in result.stdout
    assert f"{dest}/opt/mom/share/mom/policies" in result.stdout
    # The bus and polkit only look in /usr/share, whatever the prefix.
    assert f"{dest}/usr/share/dbus-1/system.d/org.ovirt.mom1.conf" in result.stdout
    assert f"{dest}/usr/share/polkit-1/actions/org.ovirt.mom1.policy" in result.stdout


# --------------------------------------------------------------------------
# cockpit/


def test_cockpit_page_files_are_all_shipped_and_named():
    """What index.html loads is in cockpit/ (Cockpit's own base1 aside), and
    nothing is loaded inline: Cockpit's content security policy refuses it."""
    import json
    import re
    html = (COCKPIT_DIR / "index.html").read_text()
    loaded = re.findall(r'<(?:script|link)\b[^>]*?(?:src|href)="([^"]+)"', html)
    assert "../base1/cockpit.js" in loaded
    ours = [name for name in loaded if not name.startswith("../base1/")]
    assert ours and all((COCKPIT_DIR / name).is_file() for name in ours), ours
    assert not re.search(r"<script\b(?![^>]*\bsrc=)", html), "inline script"
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", html), "inline style or handler"
    manifest = json.loads((COCKPIT_DIR / "manifest.json").read_text())
    assert manifest["menu"]["index"]["label"] == "Memory"
    # The .deb ships the same directory (debian/mom.install).
    lines = (REPO / "debian" / "mom.install").read_text().splitlines()
    assert "cockpit/* usr/share/cockpit/mom" in lines
