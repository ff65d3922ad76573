"""``momctl explain`` on a real guest that the policy shrank.

The same real parts as test_real_guests.py (its ``e2e`` fixture: a private
system bus with polkitd, momd as a process, a libvirtd of the test's own,
QEMU guests with virtio_balloon), in a module of its own: momd runs MoM's
shipped policies, the host is said to be under pressure (MoM's
``balloon_pressure_level`` parameter), the policy inflates a guest's
balloon, and ``momctl explain`` must tell that story: from the full size to
the target applied, set by 02-balloon.policy at the line of its
``Control "balloon_target"`` call, on the inputs the policy read.
"""

from __future__ import annotations

import json
import re
import time

from tests.e2e.test_real_guests import (MAX_KIB, MOM_POLICIES, PRESSED_LEVEL, PRESSURE_LEVEL,
                                        e2e, wait_until)  # noqa: F401 - e2e is the fixture
from tests.helpers.momd_process import momctl


def control_lines(policy) -> set[int]:
    """Lines of a policy file where a Control "balloon_target" call starts."""
    return {n for n, line in enumerate(policy.read_text().splitlines(), 1)
            if re.search(r'\(\w+\.Control "balloon_target"', line)}


def test_momctl_explain_tells_the_story_of_a_balloon_step(e2e) -> None:  # noqa: F811
    guests = e2e.ensure_pair()
    e2e.restore_full(guests)
    guest = guests[0]
    try:
        pressed_at = int(time.time() * 1_000_000)
        e2e.bus.set_parameters(balloon_pressure_level=PRESSED_LEVEL)
        # The policy decided and the controller applied: a target below the maximum.
        wait_until(lambda: 0 < e2e.guest_props(guest)["BalloonTarget"] < MAX_KIB, 60,
                   "the policy to inflate the balloon",
                   details=lambda: e2e.momd.log_text()[-3000:])
        target = e2e.guest_props(guest)["BalloonTarget"]

        result = momctl(e2e.system, "explain", guest.name, "--since", "1h", "--json")
        assert result.returncode == 0, result.stderr
        # What came of the pressure: earlier records (if any) are of before it.
        records = [r for r in json.loads(result.stdout)["records"]
                   if r["time_usec"] >= pressed_at]
        changes = [(r, c) for r in records for c in r["changes"]
                   if c["control"] == "balloon_target"]
        assert changes, records
        first, step = changes[0]
        # The first step starts from the full balloon, as the guest reported it.
        assert step["from"] == MAX_KIB == first["inputs"]["guest"]["balloon_cur"]
        assert step["to"] < MAX_KIB
        assert target in [c["to"] for _, c in changes]
        # Who set it: MoM's 02-balloon, at its Control call, in the file momd read.
        policy_file = e2e.momd.config.parent / "policies" / "02-balloon.policy"
        assert step["policy"] == "02-balloon"
        assert step["file"] == str(policy_file)
        assert step["line"] in control_lines(MOM_POLICIES / "02-balloon.policy")
        # On what: the guest's and the host's figures the policy reads.
        inputs = first["inputs"]
        assert {"balloon_cur", "balloon_max", "mem_unused"} <= inputs["guest"].keys()
        assert inputs["guest"]["balloon_max"] == MAX_KIB
        # MoM's policy reads the host's free memory as a mean (StatAvg).
        assert "mem_free" in inputs["host_means"] and "mem_available" in inputs["host"]
        assert first["reason"] in ("interval", "pressure")

        # The same story for people.
        text = momctl(e2e.system, "explain", guest.name, "--since", "1h")
        assert text.returncode == 0, text.stderr
        print(text.stdout)
        assert f"{guest.name} ({guest.uuid}): " in text.stdout
        assert "balloon_target: 512.0 MiB -> " in text.stdout
        assert f"{policy_file}:{step['line']}" in text.stdout
        assert "balloon_cur 512.0 MiB" in text.stdout

        # And the history the explanation sits on, plotted.
        plot = e2e.tmp / "explain-balloon.png"
        drawn = momctl(e2e.system, "history", guest.name, "balloon_cur", "--plot", str(plot))
        assert drawn.returncode == 0, drawn.stderr
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        e2e.bus.set_parameters(balloon_pressure_level=PRESSURE_LEVEL)
        e2e.restore_full(guests)
