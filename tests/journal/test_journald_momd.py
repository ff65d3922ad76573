"""momd's journal fields in a real journald: selectable with journalctl.

A real momd process (on the simulator, sim://) logs through python-systemd's
JournalHandler to a real systemd-journald (tests/helpers/private_journald.py:
journald in a mount namespace of the test, so the machine's own journal, if
any, is untouched).  The policies are chosen so that momd says something
about each guest, fails to load one policy and hits a per-guest policy
error; the test then selects with journalctl as an administrator would.
Without systemd as PID 1 there is no ``_SYSTEMD_UNIT``: ``journalctl -u
momd`` is tests/system's part (momd under a real systemd).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import pytest

from momservice.simulator.simulation import guest_uuid
from tests.helpers.momd_process import REPO, momd_config
from tests.helpers.private_bus import _terminate
from tests.helpers.private_journald import PrivateJournald, unavailable_reason

_WHY_NOT = unavailable_reason()
pytestmark = pytest.mark.skipif(_WHY_NOT is not None, reason=_WHY_NOT or "")

GUESTS = ["sim-guest-01", "sim-guest-02", "sim-guest-03"]

BROKEN = "(defvar a 1)\n\n(defvar b ))\n"      # does not compile: line 3
# Once its balloon has moved, sim-guest-02 fails (line 4): not at the
# start, where a policy that fails is refused and the shipped defaults run
# instead; every guest gives 64 MiB back at each evaluation.
PER_GUEST = """\
(with Guests guest
    (if (and (== (guest.Prop "name") "sim-guest-02")
             (< guest.balloon_cur guest.balloon_max))
        (/ guest.balloon_cur 0)
        (guest.Control "balloon_target" (- guest.balloon_cur 65536))))
"""
PER_GUEST_LINE = "4"


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory):
    """journald, after a momd that ran its first evaluation and stopped."""
    tmp = tmp_path_factory.mktemp("journal")
    journald = PrivateJournald(tmp)
    journald.start()
    try:
        policies = tmp / "policies"
        policies.mkdir()
        (policies / "20-broken.policy").write_text(BROKEN)
        (policies / "50-guests.policy").write_text(PER_GUEST)
        config = momd_config(tmp, f"sim:///?guests={len(GUESTS)}&seed=1",
                             engine_interval=1, verbosity="info")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
        # What systemd sets for a service: momd then logs to the journal.
        env["INVOCATION_ID"] = uuid.uuid4().hex
        env.pop("JOURNAL_STREAM", None)
        env.pop("NOTIFY_SOCKET", None)
        with open(tmp / "momd.out", "wb") as out:
            momd = subprocess.Popen(
                journald.command([sys.executable, "-m", "momservice.momd", "-c", str(config)]),
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        try:
            # The per-guest error comes with the second evaluation, just
            # before its balloon commands: wait for those too.
            journald.wait_for("MOM_POLICY=50-guests")
            journald.wait_for(f"GUEST_NAME={GUESTS[-1]}", "PRIORITY=6",
                              until=lambda es: sum("Set balloon" in e["MESSAGE"]
                                                   for e in es) >= 2)
        finally:
            _terminate(momd, 30)
        journald.wait_for("SYSLOG_IDENTIFIER=momd",
                          until=lambda es: any(e["MESSAGE"].endswith(": momd stopped") for e in es))
        yield journald
    finally:
        journald.stop()


def messages(entries: list[dict[str, str]]) -> list[str]:
    return [e["MESSAGE"] for e in entries]


@pytest.mark.parametrize("name", GUESTS)
def test_a_guest_s_messages_are_selected_by_its_name(journal, name):
    entries = journal.entries(f"GUEST_NAME={name}")
    assert entries
    assert all(name in m for m in messages(entries)), messages(entries)
    assert {e["GUEST_UUID"] for e in entries} == {guest_uuid(name)}
    assert {e["SYSLOG_IDENTIFIER"] for e in entries} == {"momd"}
    assert any("is now managed" in m for m in messages(entries))
    if name != "sim-guest-02":
        assert any(m.startswith("momservice.controllers.balloon: Set balloon of guest "
                                f"{name} ") for m in messages(entries))
    # ...and by its UUID, the same messages.
    assert messages(journal.entries(f"GUEST_UUID={guest_uuid(name)}")) == messages(entries)


def test_every_message_naming_a_guest_carries_its_fields(journal):
    for entry in journal.entries("SYSLOG_IDENTIFIER=momd"):
        named = [g for g in GUESTS if re.search(rf"\b{g}\b", entry["MESSAGE"])]
        assert [entry.get("GUEST_NAME")] == (named or [None]), entry["MESSAGE"]


def test_a_policy_that_does_not_load_is_selected_by_its_name(journal):
    [entry] = journal.entries("MOM_POLICY=20-broken")
    assert entry["MOM_POLICY_LINE"] == "3"
    assert entry["PRIORITY"] == "3"    # error
    assert "policy 20-broken skipped" in entry["MESSAGE"]
    assert "GUEST_NAME" not in entry


def test_a_per_guest_policy_error_names_the_guest_and_the_policy(journal):
    entries = journal.entries("GUEST_NAME=sim-guest-02", "MOM_POLICY=50-guests")
    assert entries
    for entry in entries:
        assert entry["MOM_POLICY_LINE"] == PER_GUEST_LINE
        assert entry["PRIORITY"] == "4"  # warning
        assert "policy error for guest sim-guest-02" in entry["MESSAGE"]
    # The policy's messages are exactly the ones about that guest's error.
    assert messages(journal.entries("MOM_POLICY=50-guests")) == messages(entries)


def test_no_traceback_and_only_journal_fields(journal):
    entries = journal.entries("SYSLOG_IDENTIFIER=momd")
    assert len(entries) > len(GUESTS)
    for entry in entries:
        assert "Traceback" not in entry["MESSAGE"], entry["MESSAGE"]
        assert "EXCEPTION_TEXT" not in entry and "EXCEPTION_INFO" not in entry
        # The record's own lower-case attributes were dropped by journald:
        # only valid (upper-case) field names are stored.
        assert all(re.fullmatch(r"_{0,2}[A-Z0-9_]+", k) for k in entry), sorted(entry)
