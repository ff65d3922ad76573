"""MoM's algorithm, the optional shipped set (policies/mom/*.policy: its own
02-balloon, and links to the defaults' 00-defines and 03-ksm), evaluated
through ``momctl policy test``.

Every expectation is worked out here from the rules the policies implement
(see the comments of each file), not copied from an earlier run.  The
evaluation sees one sample per entity, so a StatAvg equals the value given.
Sizes are KiB.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest

from momservice.cli.momctl import main

POLICY_DIR = Path(__file__).resolve().parent.parent / "policies" / "mom"
DEFINES = POLICY_DIR / "00-defines.policy"
BALLOON = POLICY_DIR / "02-balloon.policy"
KSM = POLICY_DIR / "03-ksm.policy"
DEFAULT_SET = [DEFINES, BALLOON, KSM]

GiB = 1024 * 1024  # in KiB

# The rules' constants, as the issue states them.
PRESSURE = 0.20        # host free share under which the host is pressed
CRITICAL = 0.05        # at or below: critical
GUEST_FREE = 0.20      # free share a guest keeps when the host is fine
STEP = 0.05            # largest balloon move per evaluation
MIN_CHANGE = 0.0025    # smaller moves are skipped
KSM_RESERVE = 0.20
SCAN_MIN, SCAN_MAX = 64, 1250


# -- helpers ---------------------------------------------------------------

def host(mem_available, mem_free, **extra):
    stats = {
        "mem_available": mem_available,
        "mem_free": mem_free,
        "mem_unused": mem_free // 2,
        "anon_pages": mem_available // 4,
        "swap_total": 0,
        "swap_usage": 0,
        "swap_in": 0,
        "swap_out": 0,
        "cpu_count": 8,
        "ksm_run": 0,
        "ksm_pages_to_scan": 100,
        "ksm_sleep_millisecs": 20,
        "ksm_merge_across_nodes": 1,
        "ksm_pages_shared": 0,
        "ksm_pages_sharing": 0,
        "ksm_pages_unshared": 0,
        "ksm_pages_volatile": 0,
        "ksm_full_scans": 0,
        "ksm_shareable": mem_available // 4,
    }
    stats.update(extra)
    return stats


def guest(name, cur, maximum, minimum, unused, **extra):
    stats = {
        "name": name,
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"mom-test:{name}")),
        "balloon_cur": cur,
        "balloon_max": maximum,
        "balloon_min": minimum,
        "mem_available": cur,
        "mem_unused": unused,
        "major_fault": 0,
        "minor_fault": 0,
        "swap_in": 0,
        "swap_out": 0,
    }
    if unused is None:
        del stats["mem_unused"]
    stats.update(extra)
    return stats


def run_test(capsys, host_stats, guests=(), params=(), files=None):
    return run_test_err(capsys, host_stats, guests, params, files)[0]


def run_test_err(capsys, host_stats, guests=(), params=(), files=None):
    """Like run_test, also returning what momctl wrote to stderr."""
    argv = ["policy", "test", "--host", json.dumps(host_stats)]
    for g in guests:
        argv += ["--guest", json.dumps(g)]
    for p in params:
        argv += ["--param", p]
    argv += [str(f) for f in (DEFAULT_SET if files is None else files)]
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, (out, err)
    result = json.loads(out)
    assert len(result["guests"]) == len(guests)
    for controls in result["guests"]:
        assert "error" not in controls, controls
    return result, err


def target(result, index):
    return result["guests"][index].get("balloon_target")


def assert_target(result, index, expected):
    got = target(result, index)
    assert got is not None, f"guest {index}: no balloon_target, expected {expected}"
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-6)


def sleep_ms(mem_available):
    return max(10, 10 * 16 * GiB / mem_available)


# -- a host with plenty of free memory -------------------------------------

def test_high_free_host_grows_ballooned_guests(capsys):
    h = host(16 * GiB, 12 * GiB, ksm_shareable=4 * GiB)
    assert h["mem_free"] / h["mem_available"] >= PRESSURE
    guests = [
        # Uses 1.9 M: used + 20 % = 2.3 M beats the 5 % step (2.1 M).
        guest("busy", 2_000_000, 4_000_000, 1_000_000, 100_000),
        # Uses 1.0 M: used + 20 % = 1.4 M is below the current size, so the
        # 5 % step applies.
        guest("idle", 2_000_000, 4_000_000, 1_000_000, 1_000_000),
        # Wants 3.8 M + 0.78 M, capped at balloon_max.
        guest("nearly-full", 3_900_000, 4_000_000, 1_000_000, 100_000),
        # Not ballooned at all: nothing to give back.
        guest("full", 4_000_000, 4_000_000, 1_000_000, 100_000),
        # The cap leaves a move of 0.125 %: not worth it.
        guest("almost-max", 3_995_000, 4_000_000, 1_000_000, 100_000),
        # A 5 % step would stop 3.7 k short of the maximum, less than a
        # worthwhile move: it goes all the way instead of sticking there.
        guest("step-short-of-max", 3_806_000, 4_000_000, 1_000_000, 1_500_000),
    ]
    result = run_test(capsys, h, guests)

    busy = guests[0]
    used = busy["balloon_cur"] - busy["mem_unused"]
    want = max(used + GUEST_FREE * busy["balloon_cur"], busy["balloon_cur"] * (1 + STEP))
    assert want == used + GUEST_FREE * busy["balloon_cur"]
    assert_target(result, 0, min(busy["balloon_max"], want))

    idle = guests[1]
    used = idle["balloon_cur"] - idle["mem_unused"]
    want = max(used + GUEST_FREE * idle["balloon_cur"], idle["balloon_cur"] * (1 + STEP))
    assert want == idle["balloon_cur"] * (1 + STEP)
    assert_target(result, 1, min(idle["balloon_max"], want))

    assert_target(result, 2, guests[2]["balloon_max"])
    assert "balloon_target" not in result["guests"][3]
    g = guests[4]
    assert (g["balloon_max"] - g["balloon_cur"]) <= MIN_CHANGE * g["balloon_cur"]
    assert "balloon_target" not in result["guests"][4]

    g = guests[5]
    step = g["balloon_cur"] * (1 + STEP)
    assert 0 < g["balloon_max"] - step < MIN_CHANGE * g["balloon_cur"]
    assert_target(result, 5, g["balloon_max"])


def test_high_free_host_stops_ksm(capsys):
    h = host(16 * GiB, 12 * GiB, ksm_shareable=4 * GiB, ksm_run=1)
    threshold = KSM_RESERVE * h["mem_available"]
    assert threshold + h["ksm_shareable"] < h["mem_available"]
    assert h["mem_free"] > threshold
    result = run_test(capsys, h)
    assert result["host"]["ksm_run"] == 0
    assert "ksm_pages_to_scan" not in result["host"]
    assert "ksm_sleep_millisecs" not in result["host"]


def test_pressure_boundary_is_not_pressure(capsys):
    # Exactly at 20 % free the host is not under pressure: guests grow.
    h = host(10_000_000, 2_000_000)
    g = guest("g", 2_000_000, 4_000_000, 500_000, 1_000_000)
    result = run_test(capsys, h, [g])
    assert_target(result, 0, g["balloon_cur"] * (1 + STEP))


# -- a host under pressure -------------------------------------------------

def test_low_free_host_shrinks_guests(capsys):
    h = host(16_000_000, 1_600_000)  # 10 % free
    fraction = h["mem_free"] / h["mem_available"]
    assert CRITICAL < fraction < PRESSURE
    share = GUEST_FREE * (fraction / PRESSURE)
    guests = [
        # Floor far below: the 5 % step limits the move.
        guest("roomy", 4_000_000, 4_000_000, 1_000_000, 2_000_000),
        # Floor above the 5 % step: stops at the floor.
        guest("tight", 4_000_000, 4_000_000, 1_000_000, 500_000),
        # Floor just under the current size (0.125 % away): no move.
        guest("at-floor", 4_000_000, 4_000_000, 1_000_000, 405_000),
        # Floor above the current size: never grown under pressure.
        guest("over-floor", 4_000_000, 4_000_000, 1_000_000, 300_000),
        # balloon_min dominates the floor.
        guest("guaranteed", 4_000_000, 4_000_000, 3_900_000, 2_000_000),
    ]
    result = run_test(capsys, h, guests)

    def floor(g):
        used = g["balloon_cur"] - g["mem_unused"]
        return max(g["balloon_min"], used + share * g["balloon_cur"])

    def stepped(g):
        return g["balloon_cur"] * (1 - STEP)

    roomy = guests[0]
    assert floor(roomy) < stepped(roomy)
    assert_target(result, 0, stepped(roomy))

    tight = guests[1]
    assert floor(tight) > stepped(tight)
    assert_target(result, 1, floor(tight))

    at_floor = guests[2]
    assert 0 < at_floor["balloon_cur"] - floor(at_floor) <= MIN_CHANGE * at_floor["balloon_cur"]
    assert "balloon_target" not in result["guests"][2]

    assert floor(guests[3]) > guests[3]["balloon_cur"]
    assert "balloon_target" not in result["guests"][3]

    guaranteed = guests[4]
    assert floor(guaranteed) == guaranteed["balloon_min"] > stepped(guaranteed)
    assert_target(result, 4, guaranteed["balloon_min"])


def test_low_free_host_runs_ksm_harder(capsys):
    h = host(8_000_000, 800_000, ksm_pages_to_scan=1000, ksm_shareable=6_000_000)
    result = run_test(capsys, h)["host"]
    assert result["ksm_run"] == 1
    assert result["ksm_sleep_millisecs"] == pytest.approx(sleep_ms(h["mem_available"]))
    assert result["ksm_sleep_millisecs"] == pytest.approx(20.97152)
    assert h["ksm_pages_to_scan"] + 300 > SCAN_MAX
    assert result["ksm_pages_to_scan"] == SCAN_MAX


def test_ksm_scan_rate_raised_within_bounds(capsys):
    h = host(8_000_000, 800_000, ksm_pages_to_scan=100)
    result = run_test(capsys, h)["host"]
    assert result["ksm_run"] == 1
    assert result["ksm_pages_to_scan"] == 100 + 300


def test_ksm_runs_for_overcommit_but_slows_down(capsys):
    # Plenty free now, but the shareable memory plus the reserve does not
    # fit: KSM keeps running, at a lower rate since memory is not short.
    for current, expected in ((500, 500 - 50), (100, SCAN_MIN)):
        h = host(32 * GiB, 16 * GiB, ksm_shareable=30 * GiB,
                 ksm_pages_to_scan=current)
        threshold = KSM_RESERVE * h["mem_available"]
        assert threshold + h["ksm_shareable"] >= h["mem_available"]
        assert h["mem_free"] >= threshold
        result = run_test(capsys, h)["host"]
        assert result["ksm_run"] == 1
        assert result["ksm_pages_to_scan"] == expected
        # Bigger than 16 GiB: the floor of 10 ms applies.
        assert sleep_ms(h["mem_available"]) == 10
        assert result["ksm_sleep_millisecs"] == pytest.approx(10)


def test_critical_host_squeezes_below_working_set(capsys):
    h = host(10_000_000, 300_000)  # 3 % free
    fraction = h["mem_free"] / h["mem_available"]
    assert fraction <= CRITICAL
    share = fraction - CRITICAL
    assert share < 0
    guests = [
        # Floor (used minus 2 %) lies above the 5 % step: stops there.
        guest("busy", 2_000_000, 2_000_000, 500_000, 50_000),
        # Floor far below: the 5 % step.
        guest("idle", 2_000_000, 2_000_000, 500_000, 800_000),
        # balloon_min still protects the guest.
        guest("guaranteed", 2_000_000, 2_000_000, 1_980_000, 50_000),
    ]
    result = run_test(capsys, h, guests)

    busy = guests[0]
    used = busy["balloon_cur"] - busy["mem_unused"]
    floor = max(busy["balloon_min"], used + share * busy["balloon_cur"])
    assert floor < used  # squeezed below what the guest uses
    assert floor > busy["balloon_cur"] * (1 - STEP)
    assert_target(result, 0, floor)

    idle = guests[1]
    assert_target(result, 1, idle["balloon_cur"] * (1 - STEP))

    assert_target(result, 2, guests[2]["balloon_min"])


def test_critical_boundary_is_critical(capsys):
    # Exactly 5 % free is critical: the free share is 0, not 5 %.
    h = host(10_000_000, 500_000)
    g = guest("g", 2_000_000, 2_000_000, 500_000, 50_000)
    result = run_test(capsys, h, [g])
    used = g["balloon_cur"] - g["mem_unused"]
    assert_target(result, 0, used + 0.0 * g["balloon_cur"])
    # With the non-critical share the floor would be above balloon_cur.
    assert used + GUEST_FREE * (0.05 / PRESSURE) * g["balloon_cur"] > g["balloon_cur"]


# -- special guests ----------------------------------------------------------

@pytest.mark.parametrize("free", [1_000_000, 8_000_000])  # pressed, comfortable
def test_guest_below_balloon_min_is_raised(capsys, free):
    h = host(10_000_000, free)
    g = guest("starved", 900_000, 4_000_000, 1_000_000, 100_000)
    # Neither the 5 % step nor used + 20 % would reach balloon_min.
    used = g["balloon_cur"] - g["mem_unused"]
    assert max(used + GUEST_FREE * g["balloon_cur"],
               g["balloon_cur"] * (1 + STEP)) < g["balloon_min"]
    result = run_test(capsys, h, [g])
    assert_target(result, 0, g["balloon_min"])


def test_guest_without_mem_unused_is_skipped(capsys, caplog):
    h = host(10_000_000, 1_000_000)  # 10 % free
    guests = [
        guest("no-stats", 2_000_000, 2_000_000, 500_000, None),
        guest("other", 2_000_000, 2_000_000, 500_000, 1_000_000),
    ]
    with caplog.at_level(logging.DEBUG):
        result, err = run_test_err(capsys, h, guests)
    assert result["guests"][0] == {}
    assert_target(result, 1, guests[1]["balloon_cur"] * (1 - STEP))
    logged = caplog.text + err
    assert "no-stats" in logged


# -- parameters --------------------------------------------------------------

def test_balloon_disabled_does_not_shrink_but_still_grows(capsys):
    h = host(10_000_000, 1_000_000)  # 10 % free: pressure
    guests = [
        guest("full", 2_000_000, 2_000_000, 500_000, 1_000_000),
        guest("ballooned", 2_000_000, 4_000_000, 500_000, 1_000_000),
    ]
    result = run_test(capsys, h, guests, params=["balloonEnabled=0"])
    assert "balloon_target" not in result["guests"][0]
    assert_target(result, 1, guests[1]["balloon_cur"] * (1 + STEP))

    # And the same guests shrink with the default (balloonEnabled 1).
    result = run_test(capsys, h, guests)
    assert_target(result, 0, guests[0]["balloon_cur"] * (1 - STEP))
    assert_target(result, 1, guests[1]["balloon_cur"] * (1 - STEP))


def test_ksm_disabled_stops_ksm_under_pressure(capsys):
    h = host(8_000_000, 800_000, ksm_run=1)
    assert run_test(capsys, h)["host"]["ksm_run"] == 1
    result = run_test(capsys, h, params=["ksmEnabled=0"])["host"]
    assert result["ksm_run"] == 0
    assert "ksm_pages_to_scan" not in result


def test_merge_across_nodes_change_unmerges_first(capsys):
    h = host(8_000_000, 800_000, ksm_merge_across_nodes=1, ksm_pages_shared=5000)
    result = run_test(capsys, h, params=["ksmMergeAcrossNodes=0"])["host"]
    assert result["ksm_run"] == 2
    assert "ksm_merge_across_nodes" not in result

    # Also when KSM would otherwise be stopped.
    h = host(16 * GiB, 12 * GiB, ksm_merge_across_nodes=0, ksm_pages_shared=10)
    result = run_test(capsys, h)["host"]  # default: merge across nodes (1)
    assert result["ksm_run"] == 2
    assert "ksm_merge_across_nodes" not in result


def test_merge_across_nodes_set_once_unmerged(capsys):
    h = host(8_000_000, 800_000, ksm_merge_across_nodes=1, ksm_pages_shared=0)
    result = run_test(capsys, h, params=["ksmMergeAcrossNodes=0"])["host"]
    assert result["ksm_merge_across_nodes"] == 0
    assert result["ksm_run"] == 1

    h = host(16 * GiB, 12 * GiB, ksm_merge_across_nodes=0, ksm_pages_shared=0)
    result = run_test(capsys, h)["host"]
    assert result["ksm_merge_across_nodes"] == 1
    assert result["ksm_run"] == 0


def test_merge_across_nodes_unchanged_leaves_ksm_alone(capsys):
    h = host(8_000_000, 800_000, ksm_merge_across_nodes=1, ksm_pages_shared=5000)
    result = run_test(capsys, h)["host"]
    assert result["ksm_run"] == 1


def test_true_and_false_are_defined(capsys, tmp_path):
    # A parameter policy in vdsm's style, sorted between the defines and
    # the policies that read the parameters.
    params = tmp_path / "01-parameters.policy"
    h = host(8_000_000, 800_000)  # KSM would run
    params.write_text("(set ksmEnabled False)\n")
    result = run_test(capsys, h, files=[DEFINES, params, KSM])["host"]
    assert result["ksm_run"] == 0
    params.write_text("(set ksmEnabled True)\n")
    result = run_test(capsys, h, files=[DEFINES, params, KSM])["host"]
    assert result["ksm_run"] == 1

    h = host(10_000_000, 1_000_000)
    g = guest("g", 2_000_000, 2_000_000, 500_000, 1_000_000)
    params.write_text("(set balloonEnabled False)\n")
    result = run_test(capsys, h, [g], files=[DEFINES, params, BALLOON])
    assert "balloon_target" not in result["guests"][0]
    params.write_text("(set balloonEnabled True)\n")
    result = run_test(capsys, h, [g], files=[DEFINES, params, BALLOON])
    assert_target(result, 0, g["balloon_cur"] * (1 - STEP))


# -- the set as shipped ------------------------------------------------------

def test_shipped_set_checks(capsys):
    files = sorted(POLICY_DIR.glob("*.policy"))
    assert set(DEFAULT_SET) <= set(files)
    rc = main(["policy", "check", *map(str, files)])
    out = capsys.readouterr()
    assert rc == 0, out
