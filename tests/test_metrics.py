"""The metrics file: the formatter's names, units, escaping and nil values, the
counters of a real engine (on the simulator), the atomic write and its one
warning; Prometheus' own promtool checks what is written."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import stat
from pathlib import Path

import pytest

from momservice import fields
from momservice.assembly import build_service
from momservice.config import Config
from momservice.metrics import (ALL_METRICS, COUNTER, CUMULATIVE_FIELDS, GAUGE, GUEST_METRICS,
                                GUEST_FIELDS_LEFT_OUT, HOST_FIELDS_LEFT_OUT, HOST_METRICS, GuestState,
                                MetricsFileWriter, MetricsState, escape_label_value,
                                format_metrics, write_atomically)
from momservice.policy import PolicySet
from tests.helpers.promtool import PromtoolUnavailable, check_metrics, find_promtool

REPO = Path(__file__).resolve().parents[1]

#: The names issue 14 asks for, at least.
REQUIRED = ("mom_host_memory_total_bytes", "mom_host_memory_free_bytes",
            "mom_host_memory_pressure_some_ratio", "mom_ksm_pages_sharing",
            "mom_guest_balloon_current_bytes", "mom_guest_balloon_target_bytes",
            "mom_guest_balloon_maximum_bytes", "mom_guest_memory_unused_bytes",
            "mom_policy_evaluations_total", "mom_policy_errors_total",
            "mom_balloon_operations_total")

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse(text: str) -> tuple[dict[tuple[str, frozenset], float], dict[str, list[str]]]:
    """The samples ({(name, labels): value}) and the comment lines by metric name.

    Written here from the format's description, not with the formatter's
    own helpers, so that a mistake there cannot cancel out.
    """
    samples: dict[tuple[str, frozenset], float] = {}
    comments: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            kind, name = line.split(" ")[1:3]
            comments.setdefault(name, []).append(kind)
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, raw_labels, value = match.groups()
        labels = {}
        if raw_labels:
            assert _LABEL.sub("", raw_labels) == "", raw_labels
            for key, escaped in _LABEL.findall(raw_labels):
                labels[key] = re.sub(r"\\.", lambda m: _UNESCAPE[m.group(0)], escaped)
        key = (name, frozenset(labels.items()))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return samples, comments


def guest(name: str, uuid: str) -> frozenset:
    return frozenset({("guest", name), ("uuid", uuid)})


HOST = {"mem_available": 4_000_000, "mem_free": 1_000_000, "mem_unused": 500_000,
        "mem_pressure_some": 12.5, "mem_pressure_full": 0.0, "ksm_pages_sharing": 4200,
        "ksm_sleep_millisecs": 20, "ksm_full_scans": 7, "ksmd_cpu_usage": 3.0,
        "swap_in": 10}
GUEST_A = {"balloon_cur": 2_097_152, "balloon_max": 4_194_304, "balloon_min": 0,
           "mem_unused": 300_000, "major_fault": 12, "swap_in": 8, "stats_age": 1.5}


def state(**changes) -> MetricsState:
    values = dict(host=HOST, guests=[
        GuestState("a", "uuid-a", GUEST_A, balloon_target=2_000_000),
        GuestState("b", "uuid-b", {"balloon_cur": 1024, "mem_unused": None})],
        evaluations=5, policy_errors=2, balloon_operations=3, connected=True,
        last_evaluation=1_700_000_000.25, last_evaluation_duration=0.004)
    values.update(changes)
    return MetricsState(**values)


# -- the formatter --------------------------------------------------------------


def test_names_and_base_units():
    samples, _ = parse(format_metrics(state()))
    assert samples[("mom_host_memory_total_bytes", frozenset())] == 4_000_000 * 1024
    assert samples[("mom_host_memory_free_bytes", frozenset())] == 1_000_000 * 1024
    assert samples[("mom_host_memory_pressure_some_ratio", frozenset())] == 0.125
    assert samples[("mom_host_memory_pressure_full_ratio", frozenset())] == 0.0
    assert samples[("mom_ksm_pages_sharing", frozenset())] == 4200
    assert samples[("mom_ksm_sleep_seconds", frozenset())] == 0.02
    assert samples[("mom_ksm_full_scans_total", frozenset())] == 7
    assert samples[("mom_ksmd_cpu_usage_ratio", frozenset())] == 0.03
    a = guest("a", "uuid-a")
    assert samples[("mom_guest_balloon_current_bytes", a)] == 2_097_152 * 1024
    assert samples[("mom_guest_balloon_maximum_bytes", a)] == 4_194_304 * 1024
    assert samples[("mom_guest_balloon_minimum_bytes", a)] == 0
    assert samples[("mom_guest_balloon_target_bytes", a)] == 2_000_000 * 1024
    assert samples[("mom_guest_memory_unused_bytes", a)] == 300_000 * 1024
    assert samples[("mom_guest_major_faults_total", a)] == 12
    assert samples[("mom_guest_swap_in_bytes_total", a)] == 8 * 1024
    assert samples[("mom_guest_stats_age_seconds", a)] == 1.5
    assert samples[("mom_guests", frozenset())] == 2
    assert samples[("mom_hypervisor_connected", frozenset())] == 1
    assert samples[("mom_policy_last_evaluation_timestamp_seconds", frozenset())] \
        == 1_700_000_000.25
    assert samples[("mom_policy_last_evaluation_duration_seconds", frozenset())] == 0.004


def test_counters_are_written_as_counted():
    samples, comments = parse(format_metrics(state()))
    assert samples[("mom_policy_evaluations_total", frozenset())] == 5
    assert samples[("mom_policy_errors_total", frozenset())] == 2
    assert samples[("mom_balloon_operations_total", frozenset())] == 3
    samples, _ = parse(format_metrics(state(evaluations=6, balloon_operations=4)))
    assert samples[("mom_policy_evaluations_total", frozenset())] == 6
    assert samples[("mom_balloon_operations_total", frozenset())] == 4


def test_every_family_has_one_help_and_one_type_line_first():
    text = format_metrics(state())
    _, comments = parse(text)
    assert set(comments) == {m.name for m in ALL_METRICS}
    for metric in ALL_METRICS:
        assert comments[metric.name] == ["HELP", "TYPE"], metric.name
        assert f"# TYPE {metric.name} {metric.type}\n" in text
        # Prometheus' conventions: counters and only counters end in _total.
        assert (metric.type == COUNTER) == metric.name.endswith("_total"), metric.name
        assert metric.type in (GAUGE, COUNTER)
        assert metric.name.startswith("mom_")
    assert set(REQUIRED) <= set(comments)
    # A family's samples follow its TYPE line, none elsewhere.
    current = None
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            current = line.split()[2]
        elif not line.startswith("#"):
            assert line.split("{")[0].split(" ")[0] == current, line


def test_nil_and_absent_values_are_left_out_not_zero():
    samples, comments = parse(format_metrics(state()))
    b = guest("b", "uuid-b")
    assert samples[("mom_guest_balloon_current_bytes", b)] == 1024 * 1024
    assert ("mom_guest_memory_unused_bytes", b) not in samples       # nil
    assert ("mom_guest_balloon_maximum_bytes", b) not in samples     # absent
    assert ("mom_guest_balloon_target_bytes", b) not in samples      # never set
    assert ("mom_host_swap_total_bytes", frozenset()) not in samples
    assert "mom_host_swap_total_bytes" in comments                    # the family stays
    samples, _ = parse(format_metrics(MetricsState(host={}, guests=[])))
    assert ("mom_policy_last_evaluation_timestamp_seconds", frozenset()) not in samples
    assert samples[("mom_guests", frozenset())] == 0
    assert not [k for k in samples if k[0].startswith(("mom_host_", "mom_guest_", "mom_ksm"))]


def test_values_that_are_not_numbers_are_left_out_and_bools_are_0_or_1():
    host = {"mem_available": "4 GiB", "ksm_run": True, "ksm_merge_across_nodes": False,
            "mem_free": float("nan")}
    samples, _ = parse(format_metrics(MetricsState(host=host, guests=[], connected=False)))
    assert ("mom_host_memory_total_bytes", frozenset()) not in samples
    assert samples[("mom_ksm_run", frozenset())] == 1
    assert samples[("mom_ksm_merge_across_nodes", frozenset())] == 0
    assert samples[("mom_hypervisor_connected", frozenset())] == 0
    assert "mom_host_memory_free_bytes NaN\n" in format_metrics(MetricsState(host=host, guests=[]))


def test_label_values_are_escaped():
    name = 'web "prod"\\eu\nwest'
    assert escape_label_value(name) == 'web \\"prod\\"\\\\eu\\nwest'
    text = format_metrics(MetricsState(host={}, guests=[GuestState(name, "u-1", {"balloon_cur": 1})]))
    assert 'mom_guest_balloon_current_bytes{guest="web \\"prod\\"\\\\eu\\nwest",uuid="u-1"} 1024\n' \
        in text
    samples, _ = parse(text)
    assert samples[("mom_guest_balloon_current_bytes", guest(name, "u-1"))] == 1024


def test_guests_are_written_in_a_stable_order():
    guests = [GuestState(n, f"u-{n}", {"balloon_cur": 1}) for n in ("c", "a", "b")]
    text = format_metrics(MetricsState(host={}, guests=guests))
    assert format_metrics(MetricsState(host={}, guests=guests[::-1])) == text
    lines = [l for l in text.splitlines() if l.startswith("mom_guest_balloon_current_bytes")]
    assert [re.search(r'guest="(\w)"', l).group(1) for l in lines] == ["a", "b", "c"]


# -- derived from the field catalogue ----------------------------------------------


def test_every_statistic_has_a_unit_and_a_metric_or_a_reason():
    host = {m.field for m in HOST_METRICS}
    assert host | set(HOST_FIELDS_LEFT_OUT) == fields.HOST_FIELDS
    assert not host & set(HOST_FIELDS_LEFT_OUT)
    guest = {m.field for m in GUEST_METRICS}
    assert guest | set(GUEST_FIELDS_LEFT_OUT) == fields.GUEST_FIELDS
    assert not guest & set(GUEST_FIELDS_LEFT_OUT)
    assert len({m.name for m in ALL_METRICS}) == len(ALL_METRICS)


@pytest.mark.parametrize("kind,metrics", [("host", HOST_METRICS), ("guest", GUEST_METRICS)])
def test_suffix_and_scale_follow_the_unit(kind, metrics):
    catalogue = fields.HOST_STATISTICS if kind == "host" else fields.GUEST_STATISTICS
    units = {f.name: f.unit for f in catalogue}
    for metric in metrics:
        unit = units[metric.field]
        name = metric.name.removesuffix("_total")
        expected = {fields.KIB: ("_bytes", 1024), fields.PERCENT: ("_ratio", 0.01),
                    fields.MILLISECONDS: ("_seconds", 0.001),
                    fields.MICROSECONDS: ("_seconds", 0.000001),
                    fields.SECONDS: ("_seconds", 1)}.get(unit)
        if expected is None:
            assert not name.endswith(("_bytes", "_ratio", "_seconds")), metric.name
            assert metric.scale == 1, metric.name
        else:
            assert name.endswith(expected[0]) and metric.scale == expected[1], metric.name
        cumulative = metric.field in CUMULATIVE_FIELDS[kind]
        assert (metric.type == COUNTER) == cumulative, metric.name


# -- promtool ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> Path:
    try:
        return find_promtool()
    except PromtoolUnavailable as e:
        pytest.skip(f"promtool (Debian's prometheus package) cannot be fetched: {e}")


def test_promtool_accepts_the_format(promtool):
    everything = {f: 1 for f in fields.HOST_FIELDS}
    guests = [GuestState('odd "name"\\\n', "u-1", {f: 2 for f in fields.GUEST_FIELDS}, 3),
              GuestState("plain", "u-2", {"balloon_cur": None})]
    for text in (format_metrics(MetricsState(host=everything, guests=guests)),
                 format_metrics(MetricsState(host={}, guests=[])),
                 format_metrics(state())):
        result = check_metrics(promtool, text)
        assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), \
            result.stdout + result.stderr


def test_promtool_is_strict_enough_to_fail(promtool):
    """The check above means something: promtool refuses a broken file and
    names a convention broken."""
    assert check_metrics(promtool, "mom_x{guest=\"a} 1\n").returncode != 0
    lint = check_metrics(promtool, "# HELP mom_ops a\n# TYPE mom_ops counter\nmom_ops 1\n")
    assert "_total" in lint.stdout + lint.stderr


# -- the writer, on a real engine over the simulator --------------------------------


def _service(tmp_path: Path, metrics_file: Path, **changes):
    config = dataclasses.replace(
        Config.defaults(), state_dir=tmp_path / "state", policy_dir=REPO / "policies",
        hypervisor_uri="sim:///?guests=2&seed=1", metrics_file=metrics_file, **changes)
    return build_service(config)


def _writer(service) -> MetricsFileWriter:
    (writer,) = [o for o in service.engine.observers if isinstance(o, MetricsFileWriter)]
    return writer


def test_no_writer_without_a_metrics_file(tmp_path):
    service = _service(tmp_path, None)
    assert not [o for o in service.engine.observers if isinstance(o, MetricsFileWriter)]


def test_the_engine_counts_reach_the_file(tmp_path, run):
    path = tmp_path / "mom.prom"
    service = _service(tmp_path, path)

    async def body():
        engine = service.engine
        await engine.connect()                 # one host and one guest collection
        await asyncio.sleep(0)                 # the write waits for the loop's turn
        first = path.read_text()
        by_policy = 0
        for _ in range(3):
            by_policy += len((await engine.evaluate()).applied_balloons)
        engine.policies = PolicySet({"90-fails": "(/ 1 0)"})
        await engine.evaluate()
        engine.policies = PolicySet({"90-guest-fails": "(with Guests g (Guest.Prop \"name\"))"})
        await engine.evaluate()
        uuid = sorted(engine.guests)[0]
        sample = engine.guests[uuid].latest
        target = sample["balloon_cur"] - 65536
        await service.set_balloon_target(uuid, target)
        # Sent again: a request by hand does not trust the sample's balloon_cur.
        await service.set_balloon_target(uuid, target)
        engine.collect_host()
        await asyncio.sleep(0)
        return first, path.read_text(), uuid, engine.guests[uuid].name, target, by_policy
    first, last, uuid, name, target, by_policy = run(body())
    samples, _ = parse(first)
    assert samples[("mom_policy_evaluations_total", frozenset())] == 0
    assert samples[("mom_guests", frozenset())] == 2
    assert ("mom_host_memory_total_bytes", frozenset()) in samples
    samples, _ = parse(last)
    assert samples[("mom_policy_evaluations_total", frozenset())] == 5
    # One failed evaluation, then one error for each of the two guests.
    assert samples[("mom_policy_errors_total", frozenset())] == 3
    # The policies' targets and the two by hand.
    assert samples[("mom_balloon_operations_total", frozenset())] == by_policy + 2
    assert samples[("mom_guest_balloon_target_bytes", guest(name, uuid))] == target * 1024


def test_a_dry_run_sends_nothing_and_counts_no_operation(tmp_path, run):
    path = tmp_path / "mom.prom"
    service = _service(tmp_path, path, dry_run=True)

    async def body():
        await service.engine.connect()
        uuid = sorted(service.engine.guests)[0]
        await service.set_balloon_target(uuid, service.engine.guests[uuid].latest["balloon_cur"]
                                         - 65536)
        _writer(service).write()
        return path.read_text()
    samples, _ = parse(run(body()))
    assert samples[("mom_balloon_operations_total", frozenset())] == 0
    assert not [k for k in samples if k[0] == "mom_guest_balloon_target_bytes"]


def test_the_file_is_replaced_whole_with_mode_0644(tmp_path, run):
    path = tmp_path / "mom.prom"
    path.write_text("old\n")
    os.chmod(path, 0o600)
    # A reader that opened the old file keeps reading the old file whole.
    reader = open(path)
    service = _service(tmp_path, path)
    old_umask = os.umask(0o077)
    try:
        run(service.engine.connect())
        assert _writer(service).write()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    with reader:
        assert reader.read() == "old\n"          # a new file renamed over the old one
    assert path.read_text().startswith("# HELP mom_")
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_write_atomically_leaves_no_temporary_file_when_it_fails(tmp_path):
    target = tmp_path / "a-directory"
    target.mkdir()
    (target / "keep").write_text("")
    with pytest.raises(OSError):
        write_atomically(target, "x\n")          # a file cannot replace a directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory"]


def test_a_failing_write_warns_once_naming_the_file_and_momd_goes_on(tmp_path, run, caplog):
    path = tmp_path / "missing" / "mom.prom"
    service = _service(tmp_path, path)
    caplog.set_level(logging.INFO, logger="momservice.metrics")

    async def body():
        await service.engine.connect()
        for _ in range(3):
            service.engine.collect_host()
            await service.engine.collect_guests()
            await service.engine.evaluate()
            await asyncio.sleep(0)
    run(body())
    writer = _writer(service)
    records = [r for r in caplog.records if r.name == "momservice.metrics"]
    assert [r.levelno for r in records] == [logging.WARNING]
    assert str(path) in records[0].getMessage()
    assert writer.evaluations == 3                   # counted all along
    # Once the directory exists the file is written, and that is said once.
    path.parent.mkdir()
    assert writer.write() and writer.write()
    assert path.exists()
    records = [r for r in caplog.records if r.name == "momservice.metrics"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO]
    # A new failure is news again.
    path.unlink()
    path.parent.rmdir()
    assert not writer.write() and not writer.write()
    records = [r for r in caplog.records if r.name == "momservice.metrics"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO, logging.WARNING]
