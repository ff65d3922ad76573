"""momd's D-Bus interface on a real bus with the real polkitd.

A private dbus-daemon configured like the system bus (with our bus policy),
polkitd on it with our action file installed, momd as a process.  Guests
come from libvirt's test driver in a libvirtd of the test's own, so the
test can create and destroy domains that momd sees (the test driver's
``/default`` state is shared by the connections to one daemon).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import libvirt
import pytest
from dbus_next import BusType, Message, MessageFlag, MessageType, Variant
from dbus_next.aio import MessageBus

from momservice import contract
from momservice.contract import BUS_NAME as MOM
from momservice.contract import (GUEST_INTERFACE, HOST_INTERFACE, HOST_PATH,
                                 INTROSPECTABLE_INTERFACE, MANAGER_INTERFACE, MANAGER_PATH,
                                 guest_path)
from momservice.contract import OBJECT_MANAGER_INTERFACE as OBJECT_MANAGER
from momservice.contract import PROPERTIES_INTERFACE as PROPS
from tests.helpers.ksm_sysfs import saved_real_ksm
from tests.helpers.libvirt_node import GuestSpec, domain_xml
from tests.helpers.momd_process import Momd, momd_config
from tests.helpers.as_nobody import python_as_nobody
from tests.helpers.private_bus import replaced_actions_reason, skip_reason
from tests.helpers.private_libvirtd import PrivateLibvirtd, find_libvirtd


_reason = skip_reason() or (None if find_libvirtd() else "libvirtd is not installed")
pytestmark = [pytest.mark.skipif(_reason is not None, reason=_reason or ""),
              pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def libvirtd(tmp_path_factory):
    with PrivateLibvirtd(tmp_path_factory.mktemp("lvd")) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def momd(system, libvirtd, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("momd")
    config = momd_config(tmp, libvirtd.uri("test", "/default"))
    daemon = Momd(system, config, tmp / "momd.log")
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def domain_conn(libvirtd):
    conn = libvirt.open(libvirtd.uri("test", "/default"))
    try:
        yield conn
    finally:
        conn.close()


# -- a small client -------------------------------------------------------------

async def _connect(system) -> MessageBus:
    return await MessageBus(bus_address=system.address, bus_type=BusType.SYSTEM).connect()


async def _call(bus: MessageBus, path: str, interface: str, member: str,
                signature: str = "", body: list | None = None,
                interactive: bool = False) -> Message:
    return await bus.call(Message(
        destination=MOM, path=path, interface=interface, member=member,
        signature=signature, body=body or [],
        flags=MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION if interactive else MessageFlag.NONE))


def call(system, path: str, interface: str, member: str, signature: str = "",
         body: list | None = None) -> Message:
    """One call as root; the reply or error message."""
    async def go() -> Message:
        bus = await _connect(system)
        try:
            return await _call(bus, path, interface, member, signature, body)
        finally:
            bus.disconnect()
    return asyncio.run(go())


def ok(reply: Message) -> list:
    assert reply.message_type == MessageType.METHOD_RETURN, (reply.error_name, reply.body)
    return reply.body


def error(reply: Message) -> tuple[str, str]:
    assert reply.message_type == MessageType.ERROR, reply.body
    text = reply.body[0] if reply.body else ""
    assert "Traceback" not in text and 'File "' not in text, text
    return reply.error_name, text


def prop(system, path: str, interface: str, name: str) -> Any:
    return ok(call(system, path, PROPS, "Get", "ss", [interface, name]))[0].value


def wait_until(predicate, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_dbus_test_default_guest_is_published(system, momd) -> None:
    objects = ok(call(system, MANAGER_PATH, OBJECT_MANAGER, "GetManagedObjects"))[0]
    guests = [p for p, ifaces in objects.items() if GUEST_INTERFACE in ifaces]
    # The managed objects are the manager's children: the host and the guests.
    assert HOST_PATH in objects and len(guests) == 1 and len(objects) == 2
    (path,) = guests
    guest = objects[path][GUEST_INTERFACE]
    assert guest["Name"].value == "test"
    assert path == guest_path(guest["UUID"].value)
    assert guest["BalloonMaximum"].value > 0 and guest["BalloonCurrent"].value > 0
    assert objects[HOST_PATH][HOST_INTERFACE]["MemTotal"].value > 0
    manager = ok(call(system, MANAGER_PATH, PROPS, "GetAll", "s", [MANAGER_INTERFACE]))[0]
    assert manager["GuestCount"].value == 1 and manager["Connected"].value is True
    assert manager["PolicyNames"].value == ["00-defines", "02-balloon", "03-ksm"]


# -- nobody: reads work, every change is refused -------------------------------------

# nobody may not read the checkout (a clone under /root): the script gets
# the contract's names spelled out instead of importing them.
NOBODY_CALLS = r'''
import asyncio, json, sys
from dbus_next import BusType, Message, MessageFlag, MessageType, Variant
from dbus_next.aio import MessageBus
''' + f'''
M, H, G = {MANAGER_PATH!r}, {HOST_PATH!r}, sys.argv[1]
MI, HI, GI = {MANAGER_INTERFACE!r}, {HOST_INTERFACE!r}, {GUEST_INTERFACE!r}
P, OM, INTRO, MOM = {PROPS!r}, {OBJECT_MANAGER!r}, {INTROSPECTABLE_INTERFACE!r}, {MOM!r}
''' + r'''
CALLS = [
    ("read", M, OM, "GetManagedObjects", "", []),
    ("read", M, P, "GetAll", "s", [MI]),
    ("read", H, P, "GetAll", "s", [HI]),
    ("read", G, P, "GetAll", "s", [GI]),
    ("read", M, MI, "GetPolicies", "", []),
    ("read", M, MI, "GetPolicy", "s", ["02-balloon"]),
    ("read", H, HI, "GetHistory", "s", ["mem_free"]),
    ("read", G, GI, "GetHistory", "s", ["balloon_cur"]),
    ("read", H, HI, "Explain", "t", [0]),
    ("read", G, GI, "Explain", "t", [0]),
    ("read", M, INTRO, "Introspect", "", []),
    ("write", M, MI, "SetPolicy", "ss", ["99-nobody", "(defvar x 1)"]),
    ("write", M, MI, "DeletePolicy", "s", ["02-balloon"]),
    ("write", M, MI, "ReloadPolicies", "", []),
    ("write", M, MI, "ResetPolicies", "", []),
    ("write", M, MI, "SetParameters", "a{sv}", [{"balloonEnabled": Variant("b", False)}]),
    ("write", M, MI, "EvaluateNow", "b", [False]),
    ("write", M, P, "Set", "ssv", [MI, "Verbosity", Variant("s", "error")]),
    ("write", H, HI, "SetKsm", "a{sv}", [{"run": Variant("u", 1)}]),
    ("write", G, GI, "SetBalloonTarget", "t", [300000]),
    ("write", G, GI, "SetIoTune", "sa{sv}", ["vda", {"total_iops_sec": Variant("t", 1)}]),
]
async def main():
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    out = []
    for kind, path, iface, member, sig, body in CALLS:
        for interactive in ((False, True) if kind == "write" else (False,)):
            flags = MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION if interactive else MessageFlag.NONE
            r = await bus.call(Message(destination=MOM, path=path, interface=iface,
                                       member=member, signature=sig, body=body, flags=flags))
            out.append({"kind": kind, "member": member, "interactive": interactive,
                        "error": r.error_name if r.message_type == MessageType.ERROR else None,
                        "text": str(r.body[0]) if r.message_type == MessageType.ERROR and r.body else ""})
    print(json.dumps(out))
asyncio.run(main())
'''


def test_nobody_reads_everything_and_changes_nothing(system, momd) -> None:
    objects = ok(call(system, MANAGER_PATH, OBJECT_MANAGER, "GetManagedObjects"))[0]
    (gpath,) = [p for p in objects if p.startswith(MANAGER_PATH + "/guest/")]
    before = (ok(call(system, MANAGER_PATH, MANAGER_INTERFACE, "GetPolicies"))[0],
              prop(system, MANAGER_PATH, MANAGER_INTERFACE, "Verbosity"),
              prop(system, MANAGER_PATH, MANAGER_INTERFACE, "Parameters"))
    result = python_as_nobody(NOBODY_CALLS.replace("sys.argv[1]", repr(gpath)),
                              system.bus.client_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout)
    reads = [o for o in outcomes if o["kind"] == "read"]
    writes = [o for o in outcomes if o["kind"] == "write"]
    assert reads and all(o["error"] is None for o in reads), reads
    assert len(writes) == 20
    for o in writes:
        # polkit asks for an admin password: without the interactive flag
        # the caller is told so; with it (and no agent) it is denied.
        expected = (contract.ACCESS_DENIED if o["interactive"]
                    else contract.INTERACTIVE_AUTHORIZATION_REQUIRED)
        assert o["error"] == expected, o
        assert "Traceback" not in o["text"]
    after = (ok(call(system, MANAGER_PATH, MANAGER_INTERFACE, "GetPolicies"))[0],
             prop(system, MANAGER_PATH, MANAGER_INTERFACE, "Verbosity"),
             prop(system, MANAGER_PATH, MANAGER_INTERFACE, "Parameters"))
    assert after == before
    assert "99-nobody" not in after[0]
    # A refusal is an answer, not a fault: nothing about it in momd's error log.
    log = momd.log_text()
    assert "Exception in callback" not in log and "Traceback" not in log


# -- root: every method end to end -------------------------------------------------

def test_root_manages_policies(system, momd) -> None:
    name, text = error(call(system, MANAGER_PATH, MANAGER_INTERFACE, "SetPolicy", "ss",
                            ["10-site", "(defvar a 1)\n(if 1 2)\n"]))
    assert name == contract.POLICY_SYNTAX and "line 2" in text
    assert "10-site" not in prop(system, MANAGER_PATH, MANAGER_INTERFACE, "PolicyNames")

    # Parses, fails once evaluated: refused, and nothing about the service moved.
    last_error = prop(system, MANAGER_PATH, MANAGER_INTERFACE, "LastPolicyError")
    name, text = error(call(system, MANAGER_PATH, MANAGER_INTERFACE, "SetPolicy", "ss",
                            ["zz", "(defvar x (<< 1 100000))"]))
    assert name == contract.POLICY_FAILED, text
    assert "zz" in text and "line 1" in text
    assert "zz" not in prop(system, MANAGER_PATH, MANAGER_INTERFACE, "PolicyNames")
    assert prop(system, MANAGER_PATH, MANAGER_INTERFACE, "LastPolicyError") == last_error
    name, _ = error(call(system, MANAGER_PATH, MANAGER_INTERFACE, "GetPolicy", "s", ["zz"]))
    assert name == contract.NOT_FOUND

    ok(call(system, MANAGER_PATH, MANAGER_INTERFACE, "SetPolicy", "ss",
            ["10-site", "(defvar site_marker 1)\n"]))
    assert prop(system, MANAGER_PATH, MANAGER_INTERFACE, "PolicyNames")[-1] == "10-site"
    assert ok(call(system, MANAGER_PATH, MANAGER_INTERFACE, "GetPolicy", "s",
                   ["10-site"]))[0] == "(defvar site_marker 1)\n"
    name, _ = error(call(system, MANAGER_PATH, MANAGER_INTERFACE, "GetPolicy", "s", ["nope"]))
    assert name == contract.NOT_FOUND
    name, _ = error(call(system, MANAGER_PATH, MANAGER_INTERFACE, "SetPolicy", "ss",
                         ["../escape", "1"]))
    assert name == contract.INVALID_ARGUMENT

    ok(call(system, MANAGER_PATH, MANAGER_INTERFACE, "DeletePolicy", "s", ["10-site"]))
    assert "10-site" not in prop(system, MANAGER_PATH, MANAGER_INTERFACE, "PolicyNames")
    ok(call(system, MANAGER_PATH, MANAGER_INTERFACE, "SetPolicy", "ss", ["20-x", "1"]))
    ok(call(system, MANAGER_PATH, MANAGER_INTERFACE, "ResetPolicies"))
    ok(call(system, MANAGER_PATH, MANAGER_INTERFACE, "ReloadPolicies"))
    assert prop(system, MANAGER_PATH, MANAGER_INTERFACE, "PolicyNames") == \
        ["00-defines", "02-balloon", "03-ksm"]


def test_root_parameters_verbosity_and_evaluation(system, momd) -> None:
    ok(call(system, MANAGER_PATH, MANAGER_INTERFACE, "SetParameters", "a{sv}",
            [{"balloonEnabled": Variant("b", False), "ksmEnabled": Variant("x", 0)}]))
    params = prop(system, MANAGER_PATH, MANAGER_INTERFACE, "Parameters")
    assert params["balloonEnabled"].value is False and params["ksmEnabled"].value == 0
    name, _ = error(call(system, MANAGER_PATH, MANAGER_INTERFACE, "SetParameters", "a{sv}",
                         [{"bad name": Variant("x", 1)}]))
    assert name == contract.INVALID_ARGUMENT
    # 03-ksm multiplies ksm_free_share: a string there fails every evaluation.
    name, text = error(call(system, MANAGER_PATH, MANAGER_INTERFACE, "SetParameters", "a{sv}",
                            [{"ksm_free_share": Variant("s", "lots")}]))
    assert name == contract.POLICY_FAILED, text
    assert "03-ksm" in text
    assert "ksm_free_share" not in prop(system, MANAGER_PATH, MANAGER_INTERFACE, "Parameters")

    ok(call(system, MANAGER_PATH, PROPS, "Set", "ssv",
            [MANAGER_INTERFACE, "Verbosity", Variant("s", "warning")]))
    assert prop(system, MANAGER_PATH, MANAGER_INTERFACE, "Verbosity") == "warning"
    name, _ = error(call(system, MANAGER_PATH, PROPS, "Set", "ssv",
                         [MANAGER_INTERFACE, "Verbosity", Variant("s", "chatty")]))
    assert name == contract.INVALID_ARGUMENT
    ok(call(system, MANAGER_PATH, PROPS, "Set", "ssv",
            [MANAGER_INTERFACE, "Verbosity", Variant("s", "debug")]))

    controls = ok(call(system, MANAGER_PATH, MANAGER_INTERFACE, "EvaluateNow", "b", [True]))[0]
    assert controls[HOST_PATH]["ksm_run"].value == 0  # ksmEnabled 0 stops KSM
    assert prop(system, MANAGER_PATH, MANAGER_INTERFACE, "LastEvaluation") > 0
    assert prop(system, MANAGER_PATH, MANAGER_INTERFACE, "LastPolicyError") == ""
    ok(call(system, MANAGER_PATH, MANAGER_INTERFACE, "SetParameters", "a{sv}",
            [{"balloonEnabled": Variant("b", True), "ksmEnabled": Variant("x", 1)}]))


def test_root_moves_a_balloon_and_properties_follow(system, momd, domain_conn) -> None:
    dom = domain_conn.lookupByName("test")
    path = guest_path(dom.UUIDString())
    maximum = prop(system, path, GUEST_INTERFACE, "BalloonMaximum")
    target = maximum // 2
    ok(call(system, path, GUEST_INTERFACE, "SetBalloonTarget", "t", [target]))
    assert dom.info()[2] == target  # libvirt's current memory
    assert prop(system, path, GUEST_INTERFACE, "BalloonTarget") == target
    wait_until(lambda: prop(system, path, GUEST_INTERFACE, "BalloonCurrent") == target,
               what="BalloonCurrent to follow")
    name, text = error(call(system, path, GUEST_INTERFACE, "SetBalloonTarget", "t",
                            [maximum * 2]))
    assert name == contract.INVALID_ARGUMENT
    assert dom.info()[2] == target
    history = ok(call(system, path, GUEST_INTERFACE, "GetHistory", "s", ["balloon_cur"]))[0]
    assert history and all(t > 0 for t, _ in history)
    name, _ = error(call(system, path, GUEST_INTERFACE, "GetHistory", "s", ["no_such_field"]))
    assert name == contract.NOT_FOUND


def test_set_cpu_tune_checks_first_and_reports_the_hypervisors_refusal(system, momd,
                                                                       domain_conn) -> None:
    # libvirt's test driver has no vCPU scheduler parameters: a valid request
    # reaches it and its refusal comes back as Failed; an invalid one never does.
    path = guest_path(domain_conn.lookupByName("test").UUIDString())
    name, text = error(call(system, path, GUEST_INTERFACE, "SetCpuTune", "a{sv}",
                            [{"quota": Variant("x", 50000), "period": Variant("t", 100000)}]))
    if name == contract.ACCESS_DENIED and replaced_actions_reason(contract.ACTION_CONTROL_CPUTUNE):
        pytest.skip(replaced_actions_reason(contract.ACTION_CONTROL_CPUTUNE))
    assert name == contract.FAILED, (name, text)
    for settings, words in (({"quota": Variant("x", 999)}, "vcpu_quota 999"),
                            ({"period": Variant("t", 1000001)}, "vcpu_period 1000001"),
                            ({"weight": Variant("t", 5)}, "weight"), ({}, "quota")):
        name, text = error(call(system, path, GUEST_INTERFACE, "SetCpuTune", "a{sv}",
                                [settings]))
        if name == contract.ACCESS_DENIED and replaced_actions_reason(
                contract.ACTION_CONTROL_CPUTUNE):
            pytest.skip(replaced_actions_reason(contract.ACTION_CONTROL_CPUTUNE))
        assert name == contract.INVALID_ARGUMENT and words in text, (settings, name, text)
    name, _ = error(call(system, guest_path("00000000-0000-0000-0000-000000000000"),
                         GUEST_INTERFACE, "SetCpuTune", "a{sv}", [{"quota": Variant("x", -1)}]))
    assert name.startswith("org.freedesktop.DBus.Error.Unknown"), name


def test_root_sets_the_real_ksm(system, momd) -> None:
    with saved_real_ksm() as saved:
        wanted = int(saved["pages_to_scan"]) + 7
        ok(call(system, HOST_PATH, HOST_INTERFACE, "SetKsm", "a{sv}",
                [{"pages_to_scan": Variant("u", wanted)}]))
        assert int(Path("/sys/kernel/mm/ksm/pages_to_scan").read_text()) == wanted
        wait_until(lambda: prop(system, HOST_PATH, HOST_INTERFACE, "KsmPagesToScan") == wanted,
                   what="KsmPagesToScan")
        name, _ = error(call(system, HOST_PATH, HOST_INTERFACE, "SetKsm", "a{sv}",
                             [{"run": Variant("u", 7)}]))
        assert name == contract.INVALID_ARGUMENT
        name, _ = error(call(system, HOST_PATH, HOST_INTERFACE, "SetKsm", "a{sv}",
                             [{"colour": Variant("s", "blue")}]))
        assert name == contract.INVALID_ARGUMENT


# -- signals -----------------------------------------------------------------------

def test_guests_appear_and_go_with_object_manager_signals_on_the_manager_path(
        system, momd, domain_conn) -> None:
    spec = GuestSpec("bus-extra", "6d1f7d62-3c1b-4b43-9a37-0b6a9f0c0a01", 2097152, 2097152)

    async def watch() -> list[Message]:
        bus = await _connect(system)
        seen: list[Message] = []
        bus.add_message_handler(lambda m: seen.append(m) if m.message_type ==
                                MessageType.SIGNAL and m.interface == OBJECT_MANAGER else None)
        # Subscribed to the manager's path only, as GDBus and sd-bus clients are.
        await bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=[f"type='signal',sender='{MOM}',path='{MANAGER_PATH}',"
                  f"interface='{OBJECT_MANAGER}'"]))
        dom = domain_conn.createXML(domain_xml(spec), 0)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(m.member == "InterfacesAdded" for m in seen):
            await asyncio.sleep(0.05)
        dom.destroy()
        while time.monotonic() < deadline and not any(m.member == "InterfacesRemoved" for m in seen):
            await asyncio.sleep(0.05)
        bus.disconnect()
        return seen

    seen = asyncio.run(watch())
    added = [m for m in seen if m.member == "InterfacesAdded"]
    removed = [m for m in seen if m.member == "InterfacesRemoved"]
    assert added and removed, [m.member for m in seen]
    assert all(m.path == MANAGER_PATH for m in seen)
    assert added[0].body[0] == guest_path(spec.uuid)
    assert added[0].body[1][GUEST_INTERFACE]["Name"].value == "bus-extra"
    assert removed[0].body == [guest_path(spec.uuid), [GUEST_INTERFACE]]


async def _watch_properties_changed(system, path: str) -> tuple[MessageBus, list[Message]]:
    """A connection collecting momd's PropertiesChanged signals for ``path``."""
    bus = await _connect(system)
    seen: list[Message] = []
    bus.add_message_handler(lambda m: seen.append(m) if m.message_type ==
                            MessageType.SIGNAL and m.member == "PropertiesChanged" else None)
    await bus.call(Message(
        destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus", member="AddMatch", signature="s",
        body=[f"type='signal',sender='{MOM}',path='{path}',interface='{PROPS}'"]))
    return bus, seen


def test_properties_changed_carries_only_what_changed(system, momd, domain_conn) -> None:
    dom = domain_conn.lookupByName("test")
    path = guest_path(dom.UUIDString())

    async def watch() -> list[Message]:
        bus, seen = await _watch_properties_changed(system, path)
        maximum = (await _call(bus, path, PROPS, "Get", "ss",
                               [GUEST_INTERFACE, "BalloonMaximum"])).body[0].value
        current = (await _call(bus, path, PROPS, "Get", "ss",
                               [GUEST_INTERFACE, "BalloonCurrent"])).body[0].value
        target = maximum // 3 if current != maximum // 3 else maximum // 4
        await _call(bus, path, GUEST_INTERFACE, "SetBalloonTarget", "t", [target])
        await asyncio.sleep(1.5)  # several collections
        bus.disconnect()
        return seen

    seen = asyncio.run(watch())
    assert seen
    changed = [set(m.body[1]) for m in seen]
    assert any("BalloonTarget" in c for c in changed)
    assert any("BalloonCurrent" in c for c in changed)
    # Unchanging properties are never sent again.
    assert not any({"Name", "UUID", "BalloonMaximum"} & c for c in changed)


def test_a_guest_whose_statistics_do_not_change_emits_nothing(system, momd, domain_conn) -> None:
    # The test driver's guests report the same figures every time; only
    # StatsAge moves, and it is not signalled.
    path = guest_path(domain_conn.lookupByName("test").UUIDString())

    async def watch() -> tuple[list[Message], list[float]]:
        bus, seen = await _watch_properties_changed(system, path)
        await asyncio.sleep(1.0)        # what an earlier test changed settles

        async def last_evaluation() -> int:
            return (await _call(bus, MANAGER_PATH, PROPS, "Get", "ss",
                                [MANAGER_INTERFACE, "LastEvaluation"])).body[0].value
        # A window of several collections without an evaluation (the
        # policies may move this guest's balloon, which is a real change).
        for _ in range(5):
            before = await last_evaluation()
            seen.clear()
            ages = []
            for _ in range(4):
                ages.append((await _call(bus, path, PROPS, "Get", "ss",
                                         [GUEST_INTERFACE, "StatsAge"])).body[0].value)
                await asyncio.sleep(0.5)
            if await last_evaluation() == before:
                break
        bus.disconnect()
        return seen, ages

    seen, ages = asyncio.run(watch())
    assert len(set(ages)) > 1, ages     # it does move...
    assert seen == [], [m.body for m in seen]   # ...and nothing says so
    xml = ok(call(system, path, INTROSPECTABLE_INTERFACE, "Introspect"))[0]
    start = xml.index('<property name="StatsAge"')
    element = xml[start:xml.index("</property>", start)]
    assert f'<annotation name="{contract.EMITS_CHANGED_ANNOTATION}" value="false"' in element
    other = xml.index('<property name="BalloonCurrent"')
    assert contract.EMITS_CHANGED_ANNOTATION not in xml[other:xml.index("</property>", other)]


# -- introspection -------------------------------------------------------------------

def test_introspection_carries_doc_strings(system, momd) -> None:
    for path in (MANAGER_PATH, HOST_PATH):
        out = subprocess.run(["gdbus", "introspect", "--address", system.address,
                              "--dest", MOM, "--object-path", path],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert f"@{contract.DOC_ANNOTATION}" in out.stdout
    xml = ok(call(system, MANAGER_PATH, INTROSPECTABLE_INTERFACE, "Introspect"))[0]
    for member in ("SetPolicy", "EvaluateNow", "PolicyNames", "ControlsApplied", "Verbosity"):
        start = xml.index(f'name="{member}"')
        end = xml.index("</", start)
        assert contract.DOC_ANNOTATION in xml[start:end], member
    busctl = subprocess.run(["busctl", f"--address={system.address}", "introspect", MOM,
                             MANAGER_PATH], capture_output=True, text=True, timeout=30)
    assert busctl.returncode == 0 and ".SetPolicy" in busctl.stdout, busctl.stderr
