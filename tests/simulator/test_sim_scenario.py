"""sim:// URIs and TOML scenario files: what they give, and the errors for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from momservice.simulator.scenario import (WORKLOAD_PARAMS, default_scenario, is_sim_uri,
                                           load_scenario, parse_uri)
from momservice.simulator.simulation import Simulation

SCENARIOS = Path(__file__).resolve().parents[2] / "benchmarks" / "scenarios"


def test_generated_uri():
    s = parse_uri("sim:///?guests=8&overcommit=1.5&seed=3&step=2")
    assert len(s.guests) == 8 and s.seed == 3 and s.step == 2.0
    total = sum(g.memory_mib for g in s.guests)
    # The ratio of the guests' memory to what the host has for them.
    assert total / (s.host_memory_mib - s.host_overhead_mib) == pytest.approx(1.5, rel=1e-3)
    assert len({g.name for g in s.guests}) == 8
    kinds = {g.workload.kind for g in s.guests}
    assert "spike" in kinds and len(kinds) >= 3


def test_generated_uri_options():
    s = parse_uri("sim:///?guests=3&guest_mib=2048&host_mib=4096&workload=idle&speed=10"
                  "&duration=60")
    assert [g.memory_mib for g in s.guests] == [2048] * 3
    assert s.host_memory_mib == 4096 and s.speed == 10.0 and s.duration == 60.0
    assert {g.workload.kind for g in s.guests} == {"idle"}


def test_default_uri_is_the_default_scenario():
    for uri in ("sim:///", "sim://", "sim:"):
        assert parse_uri(uri) == default_scenario()
    s = default_scenario()
    assert len(s.guests) == 8
    assert sum(g.memory_mib for g in s.guests) / (s.host_memory_mib - s.host_overhead_mib) \
        == pytest.approx(1.5, 1e-3)
    spikes = [g.workload for g in s.guests if g.workload.kind == "spike"]
    assert len(spikes) == 1 and spikes[0].params["at"] < 60
    assert parse_uri("sim:///?step=1").step == 1.0


def test_default_scenario_comes_under_pressure_within_a_minute():
    sim = Simulation(default_scenario())
    free = lambda: (sim.host.unused + sim.host.cache) / sim.host.total  # noqa: E731
    assert free() > 0.20          # comfortable at the start...
    sim.step(60.0)
    assert free() < 0.20          # ...below the balloon policy's pressure level after a minute


@pytest.mark.parametrize("uri, key", [
    ("libvirt:///system", "sim:///"),
    ("sim://somehost/?guests=2", "host part"),
    ("sim:///?guests=0", "guests"),
    ("sim:///?guests=two", "guests"),
    ("sim:///?guests=2.5", "guests"),
    ("sim:///?overcommit=-1", "overcommit"),
    ("sim:///?overcommit=1.5&host_mib=4096", "host_mib"),
    ("sim:///?seed=1&seed=2", "seed"),
    ("sim:///?colour=blue", "colour"),
    ("sim:///?step=0", "step"),
    ("sim:///?speed=", "speed"),
    ("sim:///?workload=busy", "kind"),
    ("sim:///no/such/scenario.toml", "cannot read"),
])
def test_bad_uris(uri, key):
    with pytest.raises(ValueError, match=key):
        parse_uri(uri)


def test_is_sim_uri():
    assert is_sim_uri("sim:///?guests=2") and is_sim_uri(" sim:///x.toml")
    assert not is_sim_uri("qemu:///system") and not is_sim_uri("") and not is_sim_uri("/sim")


GOOD = """
name = "two"
description = "a test"
seed = 4
duration = 600

[host]
memory_mib = 8192
overhead_mib = 512
swap_mib = 0
cpu_count = 4

[ksm]
run = 1
pages_to_scan = 500
sleep_millisecs = 50
merge_across_nodes = 0

[simulation]
step = 2
balloon_rate_mib_s = 100

[guest_defaults]
memory_mib = 2048
shareable = 0.3

[[guest]]
name = "a"
uuid = "12345678-1234-5678-1234-567812345678"
min_guarantee_mib = 512
workload = { kind = "spike", peak = 0.9, at = 10 }

[[guest]]
name = "b"
count = 3
memory_mib = 1024
workload = { kind = "idle" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return path


def test_toml_scenario(tmp_path):
    s = load_scenario(write(tmp_path, GOOD))
    assert (s.name, s.description, s.seed, s.duration) == ("two", "a test", 4, 600.0)
    assert (s.host_memory_mib, s.host_overhead_mib, s.host_swap_mib, s.cpu_count) == \
        (8192, 512, 0, 4)
    assert (s.ksm_run, s.ksm_pages_to_scan, s.ksm_sleep_millisecs,
            s.ksm_merge_across_nodes) == (1, 500, 50, 0)
    assert s.step == 2.0 and s.balloon_rate_mib_s == 100.0
    assert [g.name for g in s.guests] == ["a", "b-1", "b-2", "b-3"]
    a = s.guests[0]
    assert a.uuid == "12345678-1234-5678-1234-567812345678"
    assert (a.memory_mib, a.min_guarantee_mib, a.shareable) == (2048, 512, 0.3)
    assert a.workload.kind == "spike" and a.workload.params["peak"] == 0.9
    # Unset parameters take the kind's defaults.
    assert a.workload.params["length"] == WORKLOAD_PARAMS["spike"]["length"]
    assert [g.memory_mib for g in s.guests[1:]] == [1024] * 3


def test_uri_names_a_file_and_overrides_some_settings(tmp_path):
    path = write(tmp_path, GOOD)
    s = parse_uri(f"sim://{path}?seed=9&step=0.25&speed=5")
    assert s.name == "two" and s.seed == 9 and s.step == 0.25 and s.speed == 5.0
    with pytest.raises(ValueError, match="guests"):
        parse_uri(f"sim://{path}?guests=3")


def test_overcommit_instead_of_host_memory(tmp_path):
    text = GOOD.replace("memory_mib = 8192", "overcommit = 2")
    s = load_scenario(write(tmp_path, text))
    # Overcommit as everywhere: the guests' memory over what the host has
    # for them, the host's overhead (overhead_mib = 512 here) on top.
    assert s.host_memory_mib == (2048 + 3 * 1024) // 2 + 512


@pytest.mark.parametrize("change, key", [
    (("seed = 4", "sed = 4"), "sed"),
    (("memory_mib = 8192", "memory_mib = 8192\nmemry = 1"), "memry"),
    (("memory_mib = 8192", ""), "memory_mib and overcommit"),
    (("memory_mib = 8192", "memory_mib = 8192\novercommit = 2"), "memory_mib and overcommit"),
    (("overhead_mib = 512", "overhead_mib = 9000"), "overhead_mib"),
    (("run = 1", "run = 3"), "run"),
    (("pages_to_scan = 500", "pages_to_scan = -1"), "pages_to_scan"),
    (("step = 2", "step = 0"), "step"),
    (("step = 2", "stepp = 2"), "stepp"),
    (('kind = "spike"', 'kind = "spiky"'), "kind"),
    (("peak = 0.9", "peak = 1.5"), "peak"),
    (("peak = 0.9", "height = 0.9"), "height"),
    (("min_guarantee_mib = 512", "min_guarantee_mib = 4096"), "min_guarantee_mib"),
    (('shareable = 0.3', 'shareable = "lots"'), "shareable"),
    (('count = 3', 'count = 0'), "count"),
    (('name = "b"', 'name = "a"\nuuid = "x"'), "uuid"),
    (('name = "b"\ncount = 3', 'name = "a"'), "used twice"),
    (('memory_mib = 1024', 'memory_mib = "big"'), "memory_mib"),
    (('uuid = "12345678-1234-5678-1234-567812345678"', 'uuid = "nope"'), "uuid"),
    (("[[guest]]", "[[guests]]"), "guests"),
])
def test_bad_toml(tmp_path, change, key):
    old, new = change
    assert old in GOOD
    with pytest.raises(ValueError, match=key) as info:
        load_scenario(write(tmp_path, GOOD.replace(old, new, 1)))
    assert "scenario.toml" in str(info.value)


def test_no_guests_and_bad_syntax(tmp_path):
    with pytest.raises(ValueError, match="guest"):
        load_scenario(write(tmp_path, 'name = "x"\n[host]\nmemory_mib = 1024\n'))
    with pytest.raises(ValueError, match="not valid TOML"):
        load_scenario(write(tmp_path, "name = \n"))


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_scenarios_load_and_run(path):
    s = load_scenario(path)
    assert s.description and 1800 <= s.duration <= 7200
    # Each file documents itself at the top.
    assert path.read_text().startswith(f"# {path.stem}:")
    sim = Simulation(s)
    sim.step(120.0)
    assert sim.host.used > 0


def test_five_shipped_scenarios():
    assert {p.stem for p in SCENARIOS.glob("*.toml")} == {
        "steady-overcommit", "ramp", "spike", "mostly-idle", "ksm-identical"}


def test_with_overcommit_scales_the_host_only():
    from momservice.simulator.scenario import with_overcommit
    original = load_scenario(SCENARIOS / "spike.toml")
    scaled = with_overcommit(original, 2.5)
    total = sum(g.memory_mib for g in original.guests)
    assert scaled.host_memory_mib == -(-total * 2 // 5) + original.host_overhead_mib
    assert scaled.guests == original.guests and scaled.duration == original.duration
    assert scaled.host_swap_mib == original.host_swap_mib
    with pytest.raises(ValueError, match="overcommit"):
        with_overcommit(original, 0)
