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
    assert [r["policy"] for r in json.loads(first[1])] == ["none", "defaults", "mom", "proxmox"]


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


# -- safe overcommit ----------------------------------------------------------------

def known_scenario(tmp_path: Path, level: float) -> Path:
    """Guests whose host footprint is exact: no page cache, no KSM, no noise.

    Each 4096 MiB guest holds its reserved memory (1 %: 40.96 MiB), its
    kernel (3 %: 122.88 MiB), QEMU's 32 MiB and its working set, and with
    no policy the balloons never move: the host runs without swap exactly
    while the memory it has for guests (4096 / ratio per guest) holds that.
    """
    path = tmp_path / "known.toml"
    path.write_text(f"""name = "known"
duration = 60
[host]
overcommit = 1.0
[guest_defaults]
memory_mib = 4096
shareable = 0.0
cache_share = 0.0
initial_cache_share = 0.0
[[guest]]
name = "g"
count = 4
workload = {{ kind = "steady", level = {level}, noise = 0.0 }}
""")
    return path


def footprint_ratio(level: float) -> float:
    return 4096 / (40.96 + 122.88 + 32 + level * 4096)


def test_max_overcommit_finds_the_known_answer(capsys, tmp_path) -> None:
    level = 0.42
    assert 2.0 < footprint_ratio(level) < 2.25          # the answer is 2.0
    code, out, err = lab(capsys, "--max-overcommit", str(known_scenario(tmp_path, level)),
                         "--policy-dir", str(REPO / "benchmarks" / "policies" / "none"),
                         "--json")
    assert code == exitcodes.OK, err
    [row] = json.loads(out)
    assert row["scenario"] == "known" and row["policy"] == "none"
    assert row["safe_overcommit"] == 2.0 and row["unsafe_at"] == 2.25
    assert row["unsafe_host_swap_pages"] > 0


def test_max_overcommit_stops_at_the_cap(capsys, tmp_path) -> None:
    level = 0.02
    assert footprint_ratio(level) > 8.0                 # safe beyond the cap
    code, out, err = lab(capsys, "--max-overcommit", str(known_scenario(tmp_path, level)),
                         "--policy-dir", str(REPO / "benchmarks" / "policies" / "none"),
                         "--duration", "20")
    assert code == exitcodes.OK, err
    header, row = out.splitlines()
    assert "SAFE OVERCOMMIT" in header
    assert row.split()[:4] == ["known", "none", "8.0", "-"]


def test_guest_swap_per_guest_hour_decides_safety() -> None:
    from momservice.cli.lab_command import is_safe
    from momservice.simulator.metrics import LabMetrics

    metrics = LabMetrics(_seconds=7200.0)
    metrics.guest_swap_pages = 4 * 2 * 256 * 0.99       # just under 1 MiB per guest-hour
    assert is_safe(metrics, guests=4)
    metrics.guest_swap_pages = 4 * 2 * 256               # exactly 1 MiB per guest-hour
    assert not is_safe(metrics, guests=4)
    metrics.guest_swap_pages, metrics.host_swap_pages = 0, 1
    assert not is_safe(metrics, guests=4)


# -- reports ----------------------------------------------------------------------

def test_report_writes_valid_plots_and_the_table(capsys, tmp_path) -> None:
    import xml.etree.ElementTree as ElementTree

    from matplotlib import image

    report = tmp_path / "report"
    code, out, err = lab(capsys, SHORT, str(REPO / "benchmarks" / "scenarios" / "spike.toml"),
                         "--duration", "120", "--report", str(report))
    assert code == exitcodes.OK, err
    pngs = sorted(report.glob("*.png"))
    svgs = sorted(report.glob("*.svg"))
    assert len(pngs) == len(svgs) == 2
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = image.imread(png).shape
        assert width > height > 300                     # four panels side by side
    for svg in svgs:
        assert ElementTree.parse(svg).getroot().tag.endswith("svg")
    # One pair per scenario, numbered in order, even for URIs full of dots.
    assert [p.stem for p in pngs] == ["01-sim-guests-4-overcommit-1-5-seed-3-duration-600",
                                      "02-spike"]
    markdown = (report / "report.md").read_text()
    # One table row per scenario and policy set, as printed, and the pictures linked.
    assert markdown.count("\n| spike | ") == 4
    assert "| SCENARIO | POLICY |" in markdown
    for png in pngs:
        assert f"({png.name})" in markdown
    assert len(out.splitlines()) == 1 + 8


def test_report_directory_must_be_writable(capsys, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = lab(capsys, SHORT, "--report", str(blocker / "sub"))
    assert code == exitcodes.INVALID_ARGUMENT and "--report" in err


def test_momd_and_momctl_do_not_import_matplotlib() -> None:
    import subprocess
    import sys

    code = ("import sys, momservice.momd, momservice.cli.momctl, momservice.simulator.lab; "
            "print('matplotlib' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, check=True)
    assert result.stdout.strip() == "False"
