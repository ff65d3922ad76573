"""The contract module and the field catalogue against docs/dbus-api.md.

Everything else imports its names from ``momservice.contract`` and
``momservice.fields``, so a changed name would go unnoticed there: these
tests spell the documented names once more, on purpose, as the contract
states them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
import sys
from types import SimpleNamespace

from momservice import contract, fields
from momservice.bus.interfaces import GuestInterface, HostInterface, ManagerInterface
from momservice.cli.bus_commands import GUEST_HEADERS, GUEST_ORDER, GUEST_STAT_KIB, KSM_PROPERTIES

# The typed properties of docs/dbus-api.md, with their types.
HOST_PROPERTIES = {
    "MemTotal": "t", "MemFree": "t", "MemUnused": "t", "AnonPages": "t", "SwapTotal": "t",
    "SwapUsed": "t", "SwapIn": "t", "SwapOut": "t", "CpuCount": "u",
    "MemoryPressureSome": "d", "MemoryPressureFull": "d", "KsmRun": "u",
    "KsmPagesToScan": "u", "KsmSleepMillisecs": "u", "KsmMergeAcrossNodes": "u",
    "KsmPagesShared": "t", "KsmPagesSharing": "t", "KsmPagesUnshared": "t",
    "KsmPagesVolatile": "t", "KsmFullScans": "t", "KsmShareable": "t", "KsmdCpuUsage": "d",
    "Statistics": "a{sv}", "Controls": "a{sv}",
}
GUEST_PROPERTIES = {
    "Name": "s", "UUID": "s", "Pid": "u", "BalloonCurrent": "t", "BalloonMaximum": "t",
    "BalloonMinimum": "t", "MemAvailable": "t", "MemUnused": "t", "MemUsable": "t",
    "DiskCaches": "t", "SwapIn": "t", "SwapOut": "t", "MajorFaults": "t", "MinorFaults": "t",
    "Rss": "t", "MemSoftLimit": "t", "MemHardLimit": "t", "MemSwapHardLimit": "t",
    "StatsAge": "d", "BalloonTarget": "t", "Statistics": "a{sv}",
    "Controls": "a{sv}", "IoTune": "aa{sv}", "IoTuneCurrent": "aa{sv}",
    # Issue 12: what the balloon does by itself (0 off, 1 on).
    "BalloonAutodeflate": "u", "BalloonFreePageReporting": "u",
    "VirtioMemMaximum": "t", "VirtioMemBlock": "t", "VirtioMemRequested": "t",
    "VirtioMemCurrent": "t",
    # GuestCpuTune
    "VcpuQuota": "x", "VcpuPeriod": "t", "VcpuUserLimit": "u", "VcpuCount": "u",
}
MANAGER_PROPERTIES = {
    "Version": "s", "HypervisorURI": "s", "Connected": "b", "Controllers": "as", "DryRun": "b",
    "PolicyNames": "as", "Parameters": "a{sv}", "LastEvaluation": "t",
    "LastEvaluationDuration": "t", "LastPolicyError": "s", "GuestCount": "u", "Verbosity": "s",
}


def test_names_are_the_documented_ones():
    assert contract.BUS_NAME == "org.ovirt.mom1"
    assert contract.MANAGER_PATH == "/org/ovirt/mom1"
    assert contract.HOST_PATH == "/org/ovirt/mom1/host"
    assert contract.guest_path("6f1c-0b8e") == "/org/ovirt/mom1/guest/6f1c_0b8e"
    assert (contract.MANAGER_INTERFACE, contract.HOST_INTERFACE, contract.GUEST_INTERFACE) == (
        "org.ovirt.mom1.Manager", "org.ovirt.mom1.Host", "org.ovirt.mom1.Guest")
    assert contract.ERRORS == (
        "org.ovirt.mom1.Error.PolicySyntax", "org.ovirt.mom1.Error.PolicyFailed",
        "org.ovirt.mom1.Error.InvalidArgument", "org.ovirt.mom1.Error.NotFound",
        "org.ovirt.mom1.Error.Failed", "org.freedesktop.DBus.Error.AccessDenied",
        "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired")
    assert contract.ACTIONS == ("org.ovirt.mom1.manage-policy", "org.ovirt.mom1.control-balloon",
                                "org.ovirt.mom1.control-ksm", "org.ovirt.mom1.control-iotune",
                                "org.ovirt.mom1.control-memtune",
                                "org.ovirt.mom1.control-virtio-mem",
                                "org.ovirt.mom1.control-cputune")


def test_contract_and_catalogue_import_without_dbus_next():
    code = ("import sys, momservice.contract, momservice.fields; "
            "print(sorted(m for m in sys.modules if m.startswith('dbus_next')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def _introspected(cls: type, *args: str) -> dict[str, str]:
    entity = SimpleNamespace(props={}, latest={})
    service = SimpleNamespace(engine=SimpleNamespace(guests={"u": entity}))
    interface = cls(service, None, *args).introspect()
    return {p.name: p.signature for p in interface.properties}


def test_bus_properties_have_the_documented_names_and_types():
    assert _introspected(HostInterface) == HOST_PROPERTIES
    assert _introspected(GuestInterface, "u") == GUEST_PROPERTIES
    assert _introspected(ManagerInterface) == MANAGER_PROPERTIES


def test_property_doc_strings_come_from_the_catalogue():
    host = {p.name: p.doc for p in HostInterface.PROPERTIES}
    guest = {p.name: p.doc for p in GuestInterface.PROPERTIES}
    assert host["MemTotal"] == "Total memory, KiB (policy name mem_available)."
    assert host["KsmRun"] == \
        "KSM run state: 0 stopped, 1 running, 2 unmerging (policy name ksm_run)."
    assert guest["StatsAge"] == \
        "Time since the guest last reported, seconds (policy name stats_age)."
    for docs, rows in ((host, fields.HOST_STATISTICS), (guest, fields.GUEST_STATISTICS)):
        for field in rows:
            if field.prop is not None and field.unit is not None:
                assert f", {field.unit.word} (policy name {field.name})." in docs[field.prop]


def test_momctl_columns_and_units_come_from_the_catalogue():
    assert GUEST_HEADERS == ("NAME", "CURRENT", "MAX", "MIN", "FREE", "SWAP IN/OUT", "TARGET")
    assert GUEST_ORDER[:7] == ("Name", "UUID", "Pid", "BalloonCurrent", "BalloonMaximum",
                               "BalloonMinimum", "BalloonTarget")
    assert set(GUEST_ORDER) == set(GUEST_PROPERTIES) - {"Statistics", "Controls"}
    assert GUEST_STAT_KIB == {"balloon_cur", "balloon_max", "balloon_min", "mem_available",
                              "mem_unused", "mem_usable", "disk_caches", "rss", "mem_soft_limit",
                              "mem_hard_limit", "mem_swap_hard_limit", "swap_in",
                              "swap_out", "swap_total", "swap_usage", "balloon_target",
                              "virtio_mem_max", "virtio_mem_block", "virtio_mem_requested",
                              "virtio_mem_current"}
    assert KSM_PROPERTIES == tuple(p for p in HOST_PROPERTIES if p.startswith("Ksm"))


def test_catalogue_rows_are_unique():
    # A control may share its statistic's name (vcpu_quota: asked, and what applies).
    for rows in (fields.HOST_STATISTICS, fields.GUEST_IDENTITY + fields.GUEST_STATISTICS,
                 fields.GUEST_CONTROL_FIELDS):
        names = [f.name for f in rows]
        props = [f.prop for f in rows if f.prop]
        assert len(names) == len(set(names)) and len(props) == len(set(props))


# The names of docs/dbus-api.md as it stands (the shared contract); anything
# our interfaces have beyond them must be listed in docs/dbus-api-additions.md.
CONTRACT_GUEST_PROPERTIES = frozenset({
    "Name", "UUID", "Pid", "BalloonCurrent", "BalloonMaximum", "BalloonMinimum",
    "MemAvailable", "MemUnused", "MemUsable", "DiskCaches", "SwapIn", "SwapOut",
    "MajorFaults", "MinorFaults", "Rss", "StatsAge", "BalloonTarget", "Statistics", "Controls"})
CONTRACT_METHODS = frozenset({
    "GetPolicies", "GetPolicy", "SetPolicy", "DeletePolicy", "ReloadPolicies",
    "ResetPolicies", "SetParameters", "EvaluateNow", "GetHistory", "SetKsm",
    "SetBalloonTarget"})
CONTRACT_ACTIONS = frozenset({"org.ovirt.mom1.manage-policy", "org.ovirt.mom1.control-balloon",
                              "org.ovirt.mom1.control-ksm"})


def test_every_addition_to_the_contract_is_documented():
    additions = (Path(__file__).resolve().parent.parent / "docs"
                 / "dbus-api-additions.md").read_text()
    names = {p.name for p in GuestInterface.PROPERTIES} - CONTRACT_GUEST_PROPERTIES
    names |= {name for cls in (ManagerInterface, HostInterface, GuestInterface)
              for name, member in vars(cls).items()
              if "__DBUS_METHOD" in getattr(member, "__dict__", {})} - CONTRACT_METHODS
    names |= {a.removeprefix("org.ovirt.mom1.") for a in contract.ACTIONS
              if a not in CONTRACT_ACTIONS}
    assert names, "the interfaces have nothing beyond the contract?"
    missing = sorted(n for n in names if f"`{n}`" not in additions and n not in additions)
    assert not missing, f"not in docs/dbus-api-additions.md: {missing}"
