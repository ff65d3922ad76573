"""``momctl lab``: scenarios through the real engine over the simulator."""

from __future__ import annotations

import json
from pathlib import Path

from momservice.cli import exitcodes
from momservice.cli.momctl import main

REPO = Path(__file__).resolve().parents[2]
SHORT = "sim:///?guests=4&overcommit=1.5&seed=3&duration=600"
KEYS = {"scenario", "policy", "host_swap_pages", "guest_swap_pages", "pressure_seconds",
        "balloon_ops", "reclaimed_mib", "worst_shortfall_mib"}


def lab(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["lab", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_rows_per_scenario_and_policy_set(capsys) -> None:
    code, out, err = lab(capsys, SHORT, "--json",
                         "--policy-dir", str(REPO / "benchmarks" / "policies" / "none"),
                         "--policy-dir", str(REPO / "policies"))
    assert code == exitcodes.OK, err
    rows = json.loads(out)
    assert [(r["scenario"], r["policy"]) for r in rows] == [(SHORT, "none"), (SHORT, "policies")]
    assert all(set(r) == KEYS for r in rows)
    none, defaults = rows
    # Without a policy nothing is ballooned and the overcommitted host swaps.
    assert none["balloon_ops"] == 0 and none["reclaimed_mib"] == 0
    assert none["host_swap_pages"] > 0 and none["pressure_seconds"] > 0
    # The shipped policies balloon and spare the host its swap.
    assert defaults["balloon_ops"] > 0 and defaults["reclaimed_mib"] > 0
    assert defaults["host_swap_pages"] < none["host_swap_pages"]


def test_same_scenario_same_figures(capsys) -> None:
    first = lab(capsys, SHORT, "--json", "--duration", "300")
    second = lab(capsys, SHORT, "--json", "--duration", "300")
    assert first[0] == second[0] == exitcodes.OK
    assert json.loads(first[1]) == json.loads(second[1])
    # By default: no policy, the shipped defaults and the Proxmox-style set.
    assert [r["policy"] for r in json.loads(first[1])] == ["none", "defaults", "proxmox"]


def test_a_shipped_scenario_file_as_a_table(capsys) -> None:
    code, out, _ = lab(capsys, str(REPO / "benchmarks" / "scenarios" / "spike.toml"),
                       "--duration", "120", "--policy-dir", str(REPO / "policies"))
    assert code == exitcodes.OK
    header, row = out.splitlines()
    assert header.split()[:2] == ["SCENARIO", "POLICY"]
    assert row.split()[:2] == ["spike", "policies"]


def test_bad_input_is_refused_clearly(capsys, tmp_path) -> None:
    code, _, err = lab(capsys, "sim:///?guests=lots")
    assert code == exitcodes.INVALID_ARGUMENT and "guests" in err
    code, _, err = lab(capsys, str(tmp_path / "missing.toml"))
    assert code == exitcodes.INVALID_ARGUMENT and "missing.toml" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "10-bad.policy").write_text("(if 1 2)\n")
    code, _, err = lab(capsys, SHORT, "--policy-dir", str(broken))
    assert code == exitcodes.INVALID_ARGUMENT and "line 1" in err
