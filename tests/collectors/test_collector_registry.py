"""Collectors under MoM's names: the registry, and the ``[host] collectors`` /
``[guest] collectors`` keys honoured.

Host collectors read a temporary /proc and /sys tree (tests/helpers/fake_host.py);
the service runs over libvirt's test driver or the simulator (tests/helpers/
service_setup.py): nothing of the real host is read for the assertions.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from momservice import config, fields
from momservice.assembly import build_service
from momservice.collectors import HostCollector
from momservice.collectors.registry import GUEST_COLLECTORS, HOST_COLLECTORS
from tests.helpers.fake_host import FakeHost
from tests.helpers.service_setup import Setup

GiB = 1024 * 1024
POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    fake = FakeHost(tmp_path / "host")
    fake.set_memory(16 * GiB, 8 * GiB)
    return fake


def test_the_registry_is_the_configurations_list_of_collectors():
    assert tuple(HOST_COLLECTORS) == config.HOST_COLLECTORS
    assert tuple(GUEST_COLLECTORS) == config.GUEST_COLLECTORS
    for name, kind in {**HOST_COLLECTORS, **GUEST_COLLECTORS}.items():
        assert kind.name == name and kind.fields


def test_the_collectors_provide_exactly_the_catalogues_fields():
    assert frozenset().union(*(k.fields for k in HOST_COLLECTORS.values())) == fields.HOST_FIELDS
    assert frozenset().union(*(k.fields for k in GUEST_COLLECTORS.values())) == \
        fields.GUEST_FIELDS


@pytest.mark.parametrize("names", [
    ("HostCpu",), ("HostMemory",), ("HostKSM",), ("HostPressure",),
    ("HostMemory", "HostCpu"), tuple(HOST_COLLECTORS),
])
def test_only_the_configured_host_collectors_fields_are_collected(host, names):
    collector = HostCollector(host.proc, host.sys, collectors=names)
    collector.collect(qemu_pids=[])
    sample = collector.collect(qemu_pids=[])
    wanted = frozenset().union(*(HOST_COLLECTORS[n].fields for n in names))
    assert sample and set(sample) <= wanted
    assert collector.fields == wanted
    # What each configured collector provides is there (the fake host has it all
    # but ksmd, a kernel thread, whose usage is left out).
    assert wanted - set(sample) <= {"ksmd_cpu_usage"}


def test_pressure_is_read_once_when_host_memory_and_host_pressure_are_both_configured(host):
    collector = HostCollector(host.proc, host.sys, collectors=("HostMemory", "HostPressure"))
    assert [c.name for c in collector.collectors] == ["HostMemory"]
    assert "mem_pressure_some" in collector.collect(qemu_pids=[])


def test_a_host_collector_not_implemented_is_named_in_one_warning(host, caplog):
    caplog.set_level(logging.WARNING)
    collector = HostCollector(host.proc, host.sys,
                              collectors=("HostNoSuch", "HostCpu", "HostNoSuch"))
    for _ in range(3):
        assert set(collector.collect(qemu_pids=[])) == {"cpu_count"}
    named = [r.getMessage() for r in caplog.records if "HostNoSuch" in r.getMessage()]
    assert len(named) == 1 and "not implemented" in named[0], named


def test_the_service_honours_both_keys_and_warns_once(tmp_path, caplog, run):
    setup = Setup(tmp_path)
    caplog.set_level(logging.WARNING)
    service = setup.service(host_collectors=("HostMemory", "HostNUMA"),
                            guest_collectors=("GuestBalloon", "GuestMagic"))

    async def body():
        await service.start()
        try:
            for _ in range(3):
                await service.evaluate_now(dry_run=True)
            return dict(service.engine.host.latest), {
                u: dict(g.latest) for u, g in service.engine.guests.items()}
        finally:
            await service.stop()

    host_sample, guest_samples = run(body())
    assert host_sample and set(host_sample) <= HOST_COLLECTORS["HostMemory"].fields
    assert guest_samples
    for sample in guest_samples.values():
        assert sample and set(sample) <= GUEST_COLLECTORS["GuestBalloon"].fields
    for name in ("HostNUMA", "GuestMagic"):
        named = [r.getMessage() for r in caplog.records if name in r.getMessage()]
        assert len(named) == 1 and "not implemented" in named[0], named


def test_the_default_guest_collectors_keep_every_field_but_cpu_tunings(tmp_path, run):
    # MoM's defaults: GuestCpuTune is configured where CpuTune runs (vdsm's set).
    setup = Setup(tmp_path)
    service = setup.service()
    # Every field but the disks' I/O limits and the CPU tuning: MoM's default
    # collectors, which leave GuestIoTune and GuestCpuTune out, as MoM's do.
    assert service.engine.guest_fields_left_out == (GUEST_COLLECTORS["GuestIoTune"].fields
                                                    | GUEST_COLLECTORS["GuestCpuTune"].fields)

    async def body():
        await service.start()
        try:
            return {u: dict(g.latest) for u, g in service.engine.guests.items()}
        finally:
            await service.stop()

    samples = run(body())
    assert samples and all("balloon_cur" in s and "mem_available" in s for s in samples.values())


def test_the_simulated_host_honours_the_host_collectors(tmp_path, run):
    cfg = dataclasses.replace(config.Config.defaults(), state_dir=tmp_path / "state",
                              policy_dir=POLICIES, hypervisor_uri="sim:///?guests=2&host_mib=4096",
                              host_collectors=("HostCpu", "HostKSM"))
    service = build_service(cfg)

    async def body():
        await service.start()
        try:
            return dict(service.engine.host.latest)
        finally:
            await service.stop()

    sample = run(body())
    assert sample["cpu_count"] >= 1 and "ksm_run" in sample
    assert not set(sample) & HOST_COLLECTORS["HostMemory"].fields
