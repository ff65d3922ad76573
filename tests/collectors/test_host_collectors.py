"""Tests of the host collectors against fake and real /proc and /sys trees."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from momservice.collectors import CollectionError, HostCollector, numa_nodes
from momservice.collectors.procs import parse_pid_stat
from momservice.collectors.topology import parse_id_list
from momservice.fields import HOST_FIELDS
from tests.helpers.fake_host import (KTHREAD_FLAGS, MEMINFO, PSI, FakeClock, FakeHost,
                                     pid_stat, vmstat)

@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)


def collector(host: FakeHost, clock: FakeClock | None = None) -> HostCollector:
    return HostCollector(proc_root=host.proc, sys_root=host.sys,
                         clock=clock or FakeClock(), clock_ticks=100)


# -- meminfo ------------------------------------------------------------

def test_meminfo_arithmetic(host: FakeHost) -> None:
    sample = collector(host).collect()
    assert sample["mem_available"] == 24684092
    assert sample["mem_free"] == 23330544 + 28748 + 1147868
    assert sample["mem_unused"] == 23330544
    assert sample["anon_pages"] == 27800
    assert sample["swap_total"] == 8388604
    assert sample["swap_usage"] == 8388604 - 8126460


def test_missing_meminfo_raises(host: FakeHost) -> None:
    host.remove("proc/meminfo")
    with pytest.raises(CollectionError, match="meminfo"):
        collector(host).collect()


def test_meminfo_lacking_a_key_raises(host: FakeHost) -> None:
    host.write("proc/meminfo",
               MEMINFO.replace("AnonPages:         27800 kB\n", ""))
    with pytest.raises(CollectionError, match="AnonPages"):
        collector(host).collect()


def test_sample_uses_only_catalog_names(host: FakeHost) -> None:
    host.process(4242, "qemu-system-x86_64", rss_kib=1000)
    host.process(37, "ksmd", flags=KTHREAD_FLAGS)
    sample = collector(host).collect()
    # The fake tree has every source, so every host field is there.
    assert set(sample) == HOST_FIELDS


# -- vmstat -------------------------------------------------------------

def test_swap_deltas_across_two_collects(host: FakeHost) -> None:
    c = collector(host)
    first = c.collect()
    assert (first["swap_in"], first["swap_out"]) == (0, 0)
    host.write("proc/vmstat", vmstat(130, 250))
    second = c.collect()
    assert (second["swap_in"], second["swap_out"]) == (30, 50)
    third = c.collect()
    assert (third["swap_in"], third["swap_out"]) == (0, 0)


def test_swap_deltas_are_per_collector(host: FakeHost) -> None:
    a = collector(host)
    a.collect()
    host.write("proc/vmstat", vmstat(110, 220))
    b = collector(host)
    assert b.collect()["swap_in"] == 0
    assert a.collect()["swap_in"] == 10


def test_missing_vmstat_omits_swap_activity(host: FakeHost) -> None:
    c = collector(host)
    c.collect()
    host.remove("proc/vmstat")
    sample = c.collect()
    assert "swap_in" not in sample and "swap_out" not in sample
    assert sample["mem_available"] == 24684092
    # After a gap the delta restarts rather than spanning the gap.
    host.write("proc/vmstat", vmstat(500, 600))
    assert c.collect()["swap_in"] == 0


# -- CPUs and NUMA ------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("0-3,5\n", [0, 1, 2, 3, 5]),
    ("0\n", [0]),
    ("0-1,4-5,8\n", [0, 1, 4, 5, 8]),
    ("\n", []),
])
def test_parse_id_list(text: str, expected: list[int]) -> None:
    assert parse_id_list(text) == expected


def test_parse_id_list_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_id_list("0-x")


@pytest.mark.parametrize("online,count", [("0-3,5\n", 5), ("0\n", 1)])
def test_cpu_count_from_sysfs(host: FakeHost, online: str,
                              count: int) -> None:
    host.write("sys/devices/system/cpu/online", online)
    assert collector(host).collect()["cpu_count"] == count


def test_cpu_count_falls_back_to_proc_stat(host: FakeHost) -> None:
    host.remove("sys/devices/system/cpu/online")
    assert collector(host).collect()["cpu_count"] == 3


def test_numa_nodes(host: FakeHost) -> None:
    assert numa_nodes(host.sys) == [0, 1]
    host.write("sys/devices/system/node/online", "0,2-3\n")
    assert numa_nodes(host.sys) == [0, 2, 3]
    host.remove("sys/devices/system/node/online")
    assert numa_nodes(host.sys) == []


# -- KSM ----------------------------------------------------------------

def test_ksm_fields(host: FakeHost) -> None:
    sample = collector(host).collect()
    assert {k: v for k, v in sample.items()
            if k.startswith("ksm_") and k != "ksm_shareable"} == {
        "ksm_run": 1, "ksm_pages_to_scan": 100, "ksm_sleep_millisecs": 20,
        "ksm_merge_across_nodes": 1, "ksm_pages_shared": 1500,
        "ksm_pages_sharing": 4200, "ksm_pages_unshared": 300,
        "ksm_pages_volatile": 12, "ksm_full_scans": 7}


def test_ksm_without_merge_across_nodes(host: FakeHost) -> None:
    host.remove("sys/kernel/mm/ksm/merge_across_nodes")
    sample = collector(host).collect()
    assert "ksm_merge_across_nodes" not in sample
    assert sample["ksm_pages_sharing"] == 4200


def test_ksm_missing_a_counter_drops_the_group(host: FakeHost) -> None:
    # A partial KSM picture would mislead a policy: all or nothing.
    host.remove("sys/kernel/mm/ksm/pages_sharing")
    sample = collector(host).collect()
    assert not {k for k in sample
                if k.startswith("ksm_") and k != "ksm_shareable"}
    assert sample["mem_available"] == 24684092


def test_missing_ksm_dir_omits_ksm_fields(host: FakeHost,
                                          caplog: pytest.LogCaptureFixture
                                          ) -> None:
    host.remove("sys/kernel/mm/ksm")
    host.process(37, "ksmd", flags=KTHREAD_FLAGS)
    c = collector(host)
    with caplog.at_level(logging.WARNING):
        sample = c.collect()
        c.collect()
    assert not {k for k in sample
                if k.startswith("ksm_") and k != "ksm_shareable"}
    assert "ksmd_cpu_usage" not in sample
    assert sample["mem_available"] == 24684092
    ksm_warnings = [r for r in caplog.records if "ksm" in r.getMessage()]
    assert len(ksm_warnings) == 1


# -- ksmd CPU usage -----------------------------------------------------

def test_ksmd_cpu_usage_with_injected_clock(host: FakeHost) -> None:
    host.process(1, "systemd", utime=500, stime=500)
    host.process(37, "ksmd", utime=100, stime=50, flags=KTHREAD_FLAGS)
    clock = FakeClock(1000.0)
    c = collector(host, clock)
    assert c.collect()["ksmd_cpu_usage"] == 0.0
    # 10 s at 100 ticks/s is 1000 ticks; 150 more ticks used is 15 %.
    host.process(37, "ksmd", utime=200, stime=100, flags=KTHREAD_FLAGS)
    clock.now += 10.0
    assert c.collect()["ksmd_cpu_usage"] == pytest.approx(15.0)
    clock.now += 5.0
    assert c.collect()["ksmd_cpu_usage"] == 0.0


def test_ksmd_is_a_kernel_thread_not_a_namesake(host: FakeHost) -> None:
    # A user process calling itself ksmd, with a lower pid, is skipped.
    host.process(20, "ksmd", utime=9000, stime=9000)
    host.process(37, "ksmd", utime=100, stime=0, flags=KTHREAD_FLAGS)
    clock = FakeClock()
    c = collector(host, clock)
    c.collect()
    host.process(20, "ksmd", utime=99000, stime=99000)
    host.process(37, "ksmd", utime=110, stime=0, flags=KTHREAD_FLAGS)
    clock.now += 1.0
    assert c.collect()["ksmd_cpu_usage"] == pytest.approx(10.0)


def test_ksmd_rescanned_when_it_disappears(host: FakeHost) -> None:
    host.process(37, "ksmd", utime=100, stime=0, flags=KTHREAD_FLAGS)
    clock = FakeClock()
    c = collector(host, clock)
    c.collect()
    host.remove("proc/37")
    host.process(38, "ksmd", utime=300, stime=0, flags=KTHREAD_FLAGS)
    clock.now += 1.0
    # A new ksmd: a fresh baseline, not a delta against the old one
    # (which would read 200 % here).
    assert c.collect()["ksmd_cpu_usage"] == 0.0
    host.process(38, "ksmd", utime=350, stime=0, flags=KTHREAD_FLAGS)
    clock.now += 1.0
    assert c.collect()["ksmd_cpu_usage"] == pytest.approx(50.0)


def test_ksmd_absent_omits_usage_only(host: FakeHost) -> None:
    host.process(1, "systemd")
    sample = collector(host).collect()
    assert "ksmd_cpu_usage" not in sample
    assert sample["ksm_run"] == 1


def test_stat_comm_with_spaces_and_parentheses() -> None:
    stat = parse_pid_stat(pid_stat(4242, "a) b (c) S 1", 321, 123))
    assert stat.comm == "a) b (c) S 1"
    assert (stat.pid, stat.utime, stat.stime) == (4242, 321, 123)
    assert stat.flags == 4194304


def test_ksmd_usage_with_odd_comm_neighbours(host: FakeHost) -> None:
    host.process(10, "evil) 1 2 3 (x", utime=7, stime=7)
    host.process(37, "ksmd", utime=0, stime=0, flags=KTHREAD_FLAGS)
    clock = FakeClock()
    c = collector(host, clock)
    c.collect()
    host.process(37, "ksmd", utime=20, stime=5, flags=KTHREAD_FLAGS)
    clock.now += 0.5
    assert c.collect()["ksmd_cpu_usage"] == pytest.approx(50.0)


# -- KSM shareable memory -----------------------------------------------

@pytest.fixture
def guests(host: FakeHost) -> FakeHost:
    host.process(1, "systemd", rss_kib=12000)
    host.process(2, "kthreadd", flags=KTHREAD_FLAGS)  # no VmRSS line
    host.process(1001, "qemu-system-x86_64", rss_kib=2097152)
    host.process(1002, "qemu-kvm", rss_kib=1048576)
    host.process(1003, "libvirtd", rss_kib=40000)
    return host


def test_ksm_shareable_by_scanning(guests: FakeHost) -> None:
    # The kernel truncates comm to 15 characters, as the fake tree does.
    assert guests.proc.joinpath("1001/comm").read_text() == \
        "qemu-system-x86\n"
    sample = collector(guests).collect()
    assert sample["ksm_shareable"] == 2097152 + 1048576


def test_ksm_shareable_with_given_pids(guests: FakeHost) -> None:
    c = collector(guests)
    assert c.collect(qemu_pids=[1002])["ksm_shareable"] == 1048576
    # An exited guest (pid 9999) and a repeated pid do not count.
    assert c.collect(qemu_pids=[1001, 1001, 9999])["ksm_shareable"] \
        == 2097152
    assert c.collect(qemu_pids=[])["ksm_shareable"] == 0


def test_ksm_shareable_zero_without_guests(host: FakeHost) -> None:
    host.process(1, "systemd", rss_kib=12000)
    assert collector(host).collect()["ksm_shareable"] == 0


# -- PSI ----------------------------------------------------------------

def test_pressure_present(host: FakeHost) -> None:
    sample = collector(host).collect()
    assert sample["mem_pressure_some"] == 1.25
    assert sample["mem_pressure_full"] == 0.75
    assert isinstance(sample["mem_pressure_some"], float)


def test_pressure_absent(host: FakeHost,
                         caplog: pytest.LogCaptureFixture) -> None:
    host.remove("proc/pressure")
    c = collector(host)
    with caplog.at_level(logging.WARNING):
        sample = c.collect()
        c.collect()
    assert "mem_pressure_some" not in sample
    assert "mem_pressure_full" not in sample
    warnings = [r for r in caplog.records if "pressure" in r.getMessage()]
    assert len(warnings) == 1


def test_pressure_warning_again_after_recovery(
        host: FakeHost, caplog: pytest.LogCaptureFixture) -> None:
    c = collector(host)
    with caplog.at_level(logging.WARNING):
        host.write("proc/pressure/memory", "some avg10=oops\n")
        c.collect()
        host.write("proc/pressure/memory", PSI)
        assert c.collect()["mem_pressure_full"] == 0.75
        host.remove("proc/pressure/memory")
        c.collect()
    warnings = [r for r in caplog.records
                if r.levelno == logging.WARNING
                and "pressure" in r.getMessage()]
    assert len(warnings) == 2


# -- read-only ----------------------------------------------------------

def test_collect_writes_nothing(guests: FakeHost) -> None:
    def snapshot() -> dict[Path, tuple[bytes, int]]:
        return {p: (p.read_bytes(), p.stat().st_mtime_ns)
                for p in guests.root_path.rglob("*") if p.is_file()}
    before = snapshot()
    c = collector(guests)
    c.collect()
    c.collect(qemu_pids=[1001])
    assert snapshot() == before


# -- the real machine ---------------------------------------------------

def test_real_host() -> None:
    if not Path("/proc/meminfo").exists():
        pytest.skip("no /proc on this machine")
    c = HostCollector()
    first = c.collect()
    second = c.collect()
    assert set(second) <= HOST_FIELDS
    assert second["mem_available"] > 0
    assert 0 <= second["mem_unused"] <= second["mem_free"] \
        <= second["mem_available"]
    assert second["cpu_count"] >= 1
    assert 0 <= second["swap_usage"] <= second["swap_total"]
    assert first["swap_in"] == 0 and second["swap_in"] >= 0
    assert second["ksm_shareable"] >= 0
    if "ksmd_cpu_usage" in second:
        assert 0.0 <= second["ksmd_cpu_usage"] <= 100.0
    nodes = numa_nodes()
    assert nodes == sorted(set(nodes)) and all(n >= 0 for n in nodes)
