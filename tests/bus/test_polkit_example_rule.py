"""The shipped example polkit rule, against the real polkitd.

polkit/50-org.ovirt.mom1-manage.rules.example is installed (without
".example", as its comment says) in polkitd's rules directory; polkitd runs
on a private system bus with momd on it (sim://: nothing of the host is
written, SetKsm included).  The ``momadmin`` group exists only in this
polkitd's view of the user database (tests/helpers/polkit_view.py), so
nothing of the machine, and no other test's polkitd, changes.  The caller
is ``nobody`` (no supplementary groups), calling with gdbus; the same user
is a member of the group or not, depending on the view.

Three set-ups: the rule as shipped (manage-policy only) with nobody in the
group and without, and the rule extended as its comment says (the
control-balloon and control-ksm lines uncommented) with nobody in the group.
"""

from __future__ import annotations

import subprocess

import pytest

from momservice.contract import (ACTION_CONTROL_BALLOON, ACTION_CONTROL_KSM, BUS_NAME,
                                 GUEST_INTERFACE, HOST_INTERFACE, HOST_PATH, MANAGER_INTERFACE,
                                 MANAGER_PATH, PROPERTIES_INTERFACE, guest_path)
from momservice.contract import INTERACTIVE_AUTHORIZATION_REQUIRED as NEEDS_AUTHENTICATION
from momservice.simulator.simulation import guest_uuid
from tests.helpers.momd_process import REPO, Momd, momd_config
from tests.helpers.polkit_view import PolkitView, unavailable_reason
from tests.helpers.as_nobody import NOBODY, nobody_command, nobody_env
from tests.helpers.private_bus import Polkitd, PrivateSystemBus, SystemBusWithPolkit, skip_reason

EXAMPLE = REPO / "polkit" / "50-org.ovirt.mom1-manage.rules.example"
RULE_NAME = "50-org.ovirt.mom1-manage.rules"
# What an unprivileged caller gets when no rule grants the action
# (NEEDS_AUTHENTICATION): the actions' default (auth_admin) needs a
# password, and gdbus does not allow interaction.
GUEST = guest_path(guest_uuid("sim-guest-01"))

_reason = skip_reason() or unavailable_reason()
pytestmark = [pytest.mark.skipif(_reason is not None, reason=_reason or ""),
              pytest.mark.timeout(180)]


def extended(text: str) -> str:
    """The rule with the group also granted control-balloon and control-ksm,
    done as its comment says: uncomment those lines."""
    lines = [f'        // , "{ACTION_CONTROL_BALLOON}"', f'        // , "{ACTION_CONTROL_KSM}"']
    for line in lines:
        assert text.count(line + "\n") == 1, line
        text = text.replace(line, line.replace("// ", ""))
    return text


SETUPS = {
    "as shipped, nobody in the group": (False, True),
    "as shipped, nobody not in the group": (False, False),
    "extended, nobody in the group": (True, True),
}


@pytest.fixture(scope="module", params=list(SETUPS))
def host(request, tmp_path_factory):
    """(extended, member, system): polkitd with the rule installed and momd."""
    extend, member = SETUPS[request.param]
    tmp = tmp_path_factory.mktemp("rule")
    text = EXAMPLE.read_text()
    view = PolkitView(tmp, rules={RULE_NAME: extended(text) if extend else text},
                      groups={"momadmin": [NOBODY] if member else []})
    bus = PrivateSystemBus(tmp / "bus")
    polkit = Polkitd(bus, command_prefix=view.command_prefix())
    bus.start()
    try:
        polkit.start()
        system = SystemBusWithPolkit(bus, polkit)
        momd = Momd(system, momd_config(tmp, "sim:///?guests=2&seed=1"), tmp / "momd.log")
        try:
            yield extend, member, system
        finally:
            momd.stop()
    finally:
        try:
            polkit.stop()
        finally:
            bus.stop()


def gdbus(system, path: str, method: str, *args: str, as_root: bool = False
          ) -> tuple[bool, str]:
    """Call ``method`` as nobody (or root): (succeeded, output)."""
    argv = ["gdbus", "call", "--address", system.address, "--dest", BUS_NAME,
            "--object-path", path, "--method", method, *args]
    out = subprocess.run(argv if as_root else nobody_command(argv), env=nobody_env(),
                         cwd="/", capture_output=True, text=True, timeout=60)
    return out.returncode == 0, (out.stdout + out.stderr).strip()


def refused(result: tuple[bool, str]) -> bool:
    ok, output = result
    return not ok and f"GDBus.Error:{NEEDS_AUTHENTICATION}:" in output


def policy_names(system) -> str:
    ok, output = gdbus(system, MANAGER_PATH, f"{PROPERTIES_INTERFACE}.Get",
                       MANAGER_INTERFACE, "PolicyNames", as_root=True)
    assert ok, output
    return output


def test_members_of_the_group_and_only_they_manage_policies(host):
    _, member, system = host
    set_policy = gdbus(system, MANAGER_PATH, f"{MANAGER_INTERFACE}.SetPolicy",
                       "90-by-nobody", "(defvar by_nobody 1)")
    if not member:
        assert refused(set_policy), set_policy
        assert "90-by-nobody" not in policy_names(system)
        return
    assert set_policy == (True, "()")
    assert "90-by-nobody" in policy_names(system)
    assert gdbus(system, MANAGER_PATH, f"{MANAGER_INTERFACE}.DeletePolicy",
                 "90-by-nobody") == (True, "()")
    assert "90-by-nobody" not in policy_names(system)


def test_manual_controls_only_when_the_rule_is_extended(host):
    extend, member, system = host
    balloon = gdbus(system, GUEST, f"{GUEST_INTERFACE}.SetBalloonTarget", "uint64 3145728")
    ksm = gdbus(system, HOST_PATH, f"{HOST_INTERFACE}.SetKsm",
                "{'pages_to_scan': <uint32 200>}")
    if extend and member:
        assert balloon == (True, "()") and ksm == (True, "()"), (balloon, ksm)
    else:
        assert refused(balloon) and refused(ksm), (balloon, ksm)


def test_the_example_is_not_enabled_by_its_name():
    """polkit loads only *.rules: the shipped name must not be one."""
    assert EXAMPLE.exists() and not EXAMPLE.name.endswith(".rules")
    assert EXAMPLE.name == RULE_NAME + ".example"
