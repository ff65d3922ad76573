"""Trace workloads: both formats, their errors, scenario files and trace URIs.

The format tests use small trace files each test writes; the URI tests read
the Bitbrains sample the project keeps next to the repository
(REPO/../shared/traces, as in CI).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from momservice.simulator.scenario import load_scenario, parse_uri
from momservice.simulator.simulation import Simulation
from momservice.simulator.trace import load_trace, parse_trace

REPO = Path(__file__).resolve().parents[2]
SHARED_TRACES = REPO.parent / "shared" / "traces" / "bitbrains-rnd"

GWA_HEADER = ("Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];"
              "\tCPU usage [%];\tMemory capacity provisioned [KB];\tMemory usage [KB];"
              "\tDisk read throughput [KB/s];\tDisk write throughput [KB/s];"
              "\tNetwork received throughput [KB/s];\tNetwork transmitted throughput [KB/s]")


def gwa_row(t: int, provisioned: float, usage: float) -> str:
    return ";\t".join(str(v) for v in (t, 2, 5851.9989, 87.7, 1.5, provisioned, usage,
                                       160.8, 21.7, 0.26, 1.46))


def write_gwa(path: Path, rows: list[tuple[int, float, float]]) -> Path:
    path.write_text("\n".join([GWA_HEADER, *(gwa_row(*r) for r in rows)]) + "\n")
    return path


def need_shared_traces() -> Path:
    if not SHARED_TRACES.is_dir():
        pytest.skip(f"no shared traces at {SHARED_TRACES} (CI has them)")
    return SHARED_TRACES


# -- the formats ------------------------------------------------------------------


def test_gwa_trace_is_read_interpolated_and_its_odd_samples_mended(tmp_path):
    start = 1372629804
    trace = load_trace(write_gwa(tmp_path / "vm.csv", [
        (start, 4194304.0, 1048576.0),
        (start + 300, 4194304.0, 2097152.0),
        (start + 600, 4194304.0, 0.0),          # a gap: the last measure holds
        (start + 900, 4194304.0, 5000000.0),    # above provisioned: capped
    ]), "gwa")
    assert trace.provisioned_kib == 4194304.0
    assert trace.times == (0.0, 300.0, 600.0, 900.0)
    assert trace.usage_kib == (1048576.0, 2097152.0, 2097152.0, 4194304.0)
    assert trace.usage_at(0) == 1048576.0
    assert trace.usage_at(150) == pytest.approx(1572864.0)    # half way: interpolated
    assert trace.usage_at(750) == pytest.approx(3145728.0)
    assert trace.usage_at(10_000) == 4194304.0                 # past the end: holds


def test_gwa_leading_zeros_take_the_first_measure(tmp_path):
    trace = load_trace(write_gwa(tmp_path / "vm.csv", [
        (100, 2097152.0, 0.0), (400, 2097152.0, 524288.0), (700, 2097152.0, 0.0)]), "gwa")
    assert trace.usage_kib == (524288.0, 524288.0, 524288.0)


def test_csv_trace_with_and_without_header(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("0,1000\n60,3000\n")
    headed = tmp_path / "headed.csv"
    headed.write_text("seconds,kib\n10,1000\n70,3000\n")
    for path in (plain, headed):
        trace = load_trace(path, "csv")
        assert trace.times == (0.0, 60.0) and trace.provisioned_kib == 0.0
        assert trace.usage_at(30) == pytest.approx(2000.0)


def test_parsed_traces_are_cached_per_file_until_it_changes(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("0,1000\n60,3000\n")
    first = load_trace(path, "csv")
    assert load_trace(path, "csv") is first
    path.write_text("0,1000\n60,3000\n120,5000\n")
    assert load_trace(path, "csv").times == (0.0, 60.0, 120.0)


@pytest.mark.parametrize("fmt, text, where", [
    ("gwa", "", "line 1"),
    ("gwa", "Timestamp [ms];\tMemory usage [KB]\n1;\t2\n", "line 1: no column "
                                                             "'Memory capacity provisioned [KB]'"),
    ("gwa", GWA_HEADER + "\n" + gwa_row(1, 4.0, 2.0) + "\n" + gwa_row(301, 4.0, 2.0)
     .replace("301", "3o1") + "\n", "line 3: not a number"),
    ("gwa", GWA_HEADER + "\n" + gwa_row(1, 4.0, 2.0) + "\n1;\t2\n", "line 3: 2 fields"),
    ("gwa", GWA_HEADER + "\n" + gwa_row(300, 4.0, 2.0) + "\n" + gwa_row(0, 4.0, 2.0) + "\n",
     "line 3: time 0 does not come after"),
    ("gwa", GWA_HEADER + "\n", "no samples"),
    ("gwa", GWA_HEADER + "\n" + gwa_row(1, 4.0, 0.0) + "\n", "every sample reports 0"),
    ("gwa", GWA_HEADER + "\n" + gwa_row(1, 4.0, -2.0) + "\n", "line 2: negative"),
    ("csv", "time,memory\n0,1\n", "line 1: unknown columns"),
    ("csv", "0,1\n1,2,3\n", "line 2: expected two columns"),
    ("csv", "0,1\n5,lots\n", "line 2: not a number"),
    ("csv", "0,1\n5,nan\n", "line 2: not a finite number"),
    ("csv", "seconds,kib\n", "no samples"),
])
def test_bad_traces_name_file_and_line(tmp_path, fmt, text, where):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        load_trace(path, fmt)
    assert str(path) in str(error.value) and where in str(error.value)


def test_unreadable_trace_is_named(tmp_path):
    with pytest.raises(ValueError, match="missing.csv: cannot read"):
        load_trace(tmp_path / "missing.csv", "gwa")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="binary.csv: cannot read"):
        load_trace(tmp_path / "binary.csv", "gwa")


# -- in scenarios -----------------------------------------------------------------


def scenario_file(tmp_path: Path, workload: str, extra: str = "") -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(f'[host]\noverhead_mib = 512\nmemory_mib = 4096\n\n'
                    f'[[guest]]\nname = "replay"\n{extra}workload = {workload}\n')
    return path


def test_scenario_file_replays_a_trace_relative_to_itself(tmp_path):
    (tmp_path / "traces").mkdir()
    write_gwa(tmp_path / "traces" / "vm.csv", [(0, 2097152.0, 524288.0),
                                              (300, 2097152.0, 1048576.0),
                                              (600, 2097152.0, 786432.0)])
    scenario = load_scenario(scenario_file(
        tmp_path, '{ kind = "trace", file = "traces/vm.csv", format = "gwa", offset = 150 }'))
    guest = scenario.guests[0]
    assert guest.memory_mib == 2048                 # the trace's provisioned memory
    assert guest.workload.kind == "trace" and guest.workload.params["offset"] == 150
    sim = Simulation(scenario)
    model = next(iter(sim.guests.values()))
    assert model.working_set == pytest.approx(786432.0)     # 150 s in: 512 -> 1024 MiB
    sim.step(150)
    assert model.working_set == pytest.approx(1048576.0)


def test_csv_trace_needs_the_guests_memory(tmp_path):
    (tmp_path / "t.csv").write_text("0,100000\n60,200000\n")
    with pytest.raises(ValueError, match="memory_mib is required.*csv trace"):
        load_scenario(scenario_file(tmp_path, '{ kind = "trace", file = "t.csv", '
                                              'format = "csv" }'))
    scenario = load_scenario(scenario_file(
        tmp_path, '{ kind = "trace", file = "t.csv", format = "csv" }', "memory_mib = 1024\n"))
    assert scenario.guests[0].memory_mib == 1024


@pytest.mark.parametrize("workload, message", [
    ('{ kind = "trace" }', "file must be"),
    ('{ kind = "trace", file = "t.csv", format = "xml" }', "format must be one of gwa, csv"),
    ('{ kind = "trace", file = "t.csv", offset = -1 }', "offset must be at least"),
    ('{ kind = "trace", file = "t.csv", level = 0.3 }', "unknown key 'level'"),
    ('{ kind = "trace", file = "nowhere.csv" }', "nowhere.csv: cannot read"),
])
def test_bad_trace_workloads_are_refused_before_anything_runs(tmp_path, workload, message):
    (tmp_path / "t.csv").write_text("0,100000\n60,200000\n")
    with pytest.raises(ValueError, match=message):
        load_scenario(scenario_file(tmp_path, workload, "memory_mib = 1024\n"))


def test_bad_trace_in_a_scenario_names_the_trace_line(tmp_path):
    (tmp_path / "t.csv").write_text("0,100000\n60,200000\n90,\n")
    with pytest.raises(ValueError) as error:
        load_scenario(scenario_file(tmp_path, '{ kind = "trace", file = "t.csv", '
                                              'format = "csv" }', "memory_mib = 1024\n"))
    assert f"{tmp_path / 't.csv'} line 3" in str(error.value)


# -- trace URIs -------------------------------------------------------------------


def test_trace_uri_picks_guests_by_seed_and_sizes_the_host(tmp_path):
    for i, mib in enumerate((1024, 2048, 4096)):
        write_gwa(tmp_path / f"{i}.csv", [(0, mib * 1024.0, 1000.0), (300 + i * 300, mib * 1024.0,
                                                                     2000.0)])
    (tmp_path / "README.md").write_text("not a trace\n")
    uri = f"sim:///?traces={tmp_path}&guests=2&overcommit=2&seed=4"
    a, b = parse_uri(uri), parse_uri(uri)
    assert a == b
    assert len(a.guests) == 2 and len({g.name for g in a.guests}) == 2
    total = sum(g.memory_mib for g in a.guests)
    assert a.host_memory_mib == total // 2 + a.host_overhead_mib
    assert a.duration == min(g.workload.trace.duration for g in a.guests)
    picks = {tuple(g.name for g in parse_uri(uri.replace("seed=4", f"seed={s}")).guests)
             for s in range(8)}
    assert len(picks) > 1                   # the seed chooses
    more = parse_uri(f"sim:///?traces={tmp_path}&guests=5&seed=1&duration=60")
    assert len(more.guests) == 5 and more.duration == 60     # files are reused


@pytest.mark.parametrize("query, message", [
    ("traces={empty}", "no trace files"),
    ("traces={empty}/nowhere", "cannot list"),
    ("traces={empty}&guest_mib=1024", "guest_mib cannot be used with traces"),
])
def test_bad_trace_uris(tmp_path, query, message):
    with pytest.raises(ValueError, match=message):
        parse_uri("sim:///?" + query.format(empty=tmp_path))


def test_shared_bitbrains_traces_replay():
    directory = need_shared_traces()
    scenario = parse_uri(f"sim:///?traces={directory}&guests=6&overcommit=2&seed=1")
    assert scenario.duration > 6 * 86400            # a week of samples
    assert all(g.workload.trace.provisioned_kib >= 1024 * 1024 for g in scenario.guests)
    sim = Simulation(scenario)
    sim.step(3600)
    assert any(g.working_set > 0 for g in sim.guests.values())


def test_shipped_trace_scenario_loads():
    need_shared_traces()
    path = REPO / "benchmarks" / "scenarios" / "traces" / "bitbrains-day.toml"
    scenario = load_scenario(path)
    total = sum(g.memory_mib for g in scenario.guests)
    assert scenario.host_memory_mib == total // 2 + scenario.host_overhead_mib
    assert all(g.workload.kind == "trace" for g in scenario.guests)


def test_same_seed_same_lab_run_on_traces(tmp_path, run):
    from momservice.policy import PolicySet
    from momservice.policy_files import find_policy_files, read_policy_texts
    from momservice.simulator.lab import Lab

    for i in range(4):
        # Four VMs of 2 GiB whose usage climbs at different rates.
        write_gwa(tmp_path / f"{i}.csv", [(300 * k, 2097152.0, 262144.0 * (1 + k * (i + 1) / 4))
                                          for k in range(6)])
    policies = PolicySet(read_policy_texts(find_policy_files([REPO / "policies"])))

    def one_run(seed: int):
        lab = Lab("sim:///", policies, scenario=parse_uri(
            f"sim:///?traces={tmp_path}&guests=3&overcommit=2.5&seed={seed}"))

        async def go():
            await lab.start()
            await lab.run(lab.simulation.scenario.duration, record=True)
            await lab.stop()

        run(go())
        return [g.name for g in lab.simulation.scenario.guests], lab.record.host, [
            (e.reason, e.applied_balloons) for e in lab.record.evaluations]

    first = one_run(5)
    assert one_run(5) == first
    assert any(applied for _, applied in first[2])      # the policies had work to do
    assert one_run(6)[0] != first[0]                     # another seed, other VMs
