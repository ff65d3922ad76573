"""LibvirtHypervisor against libvirt's own test driver (no mocks of libvirt)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from momservice.fields import GUEST_FIELDS, GUEST_REQUIRED_FIELDS
from momservice.hypervisor import HypervisorError
from momservice.hypervisor.libvirt import LibvirtHypervisor, default_pid_dir
from momservice.hypervisor.libvirt_xml import min_guarantee_kib, to_kib
from tests.helpers.hypervisor_listener import RecordingListener, wait_for
from tests.helpers.libvirt_node import (
    GuestSpec, domain_xml, guest_specs, node_uri, write_node_xml,
)

FALLBACK_TEXT = "does not report balloon statistics in bulk"


@pytest.fixture
def specs() -> list[GuestSpec]:
    return guest_specs(6)


@pytest.fixture
def node(tmp_path: Path, specs: list[GuestSpec]) -> Path:
    return write_node_xml(tmp_path / "node.xml", specs)


def test_start_reports_running_guests(run, node, specs, tmp_path):
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    (pid_dir / f"{specs[0].name}.pid").write_text("4242\n")
    (pid_dir / f"{specs[1].name}.pid").write_text("garbage")

    async def body() -> None:
        listener = RecordingListener()
        hv = LibvirtHypervisor(node_uri(node), pid_dir=pid_dir)
        await hv.start(listener)
        try:
            assert hv.connected
            assert hv.uri == node_uri(node)
            assert listener.connection == [True]
            assert {u: (i.name, i.balloon_min) for u, i in listener.added.items()} == {
                s.uuid: (s.name, s.balloon_min_kib) for s in specs}
            assert any(s.balloon_min_kib for s in specs)  # the node covers both cases
            assert set(hv.guests()) == {s.uuid for s in specs}
            assert listener.added[specs[0].uuid].pid == 4242
            assert listener.added[specs[1].uuid].pid == 0   # unreadable pid file
            assert listener.added[specs[2].uuid].pid == 0   # no pid file
            assert hv.qemu_pids() == [4242]
            # Nothing changed: a resync reports nothing.
            before = len(listener.events)
            await hv.resync()
            assert len(listener.events) == before
        finally:
            await hv.close()
        assert not hv.connected

    run(body())


def test_collect_samples_every_guest_and_logs_fallback_once(run, node, specs, caplog):
    caplog.set_level(logging.INFO, logger="momservice.hypervisor.libvirt")

    async def body() -> None:
        hv = LibvirtHypervisor(node_uri(node))
        await hv.start(RecordingListener())
        try:
            first = await hv.collect()
            second = await hv.collect()
        finally:
            await hv.close()
        for samples in (first, second):
            assert set(samples) == {s.uuid for s in specs}
            for spec in specs:
                sample = samples[spec.uuid]
                assert sample["balloon_cur"] == spec.current_kib
                assert sample["balloon_max"] == spec.memory_kib
                assert sample["balloon_min"] == spec.balloon_min_kib
                assert GUEST_REQUIRED_FIELDS <= set(sample)
                assert set(sample) <= GUEST_FIELDS
                assert isinstance(sample["stats_age"], float) and sample["stats_age"] >= 0

    run(body())
    # The test driver fills no balloon group in bulk: said once, not per call.
    assert sum(FALLBACK_TEXT in r.getMessage() for r in caplog.records) == 1


def test_set_balloon_target_is_read_back(run, node, specs):
    async def body() -> None:
        hv = LibvirtHypervisor(node_uri(node))
        await hv.start(RecordingListener())
        try:
            target = specs[3].memory_kib // 2
            assert target != specs[3].current_kib
            await hv.set_balloon_target(specs[3].uuid, target)
            samples = await hv.collect()
            assert samples[specs[3].uuid]["balloon_cur"] == target
            assert samples[specs[2].uuid]["balloon_cur"] == specs[2].current_kib

            # Refused by libvirt (above the maximum): its message, our error.
            with pytest.raises(HypervisorError) as refused:
                await hv.set_balloon_target(specs[3].uuid, specs[3].memory_kib * 2)
            assert str(refused.value)
            with pytest.raises(HypervisorError):
                await hv.set_balloon_target("00000000-0000-0000-0000-00000000dead", 1024)
        finally:
            await hv.close()
        with pytest.raises(HypervisorError):
            await hv.set_balloon_target(specs[3].uuid, 1024)

    run(body())


def test_lifecycle_events_add_and_remove_guests(run, node, specs):
    extra = guest_specs(1, prefix="extra", min_guarantee_every=1)[0]

    async def body() -> None:
        listener = RecordingListener()
        hv = LibvirtHypervisor(node_uri(node))
        await hv.start(listener)
        try:
            # The test driver's state is per connection: act through the
            # hypervisor's own connection so that it sees the events.
            conn = hv.connection
            assert conn is not None
            dom = conn.createXML(domain_xml(extra), 0)
            await wait_for(lambda: extra.uuid in listener.added, what="guest_added")
            info = listener.added[extra.uuid]
            assert (info.name, info.balloon_min) == (extra.name, extra.balloon_min_kib)
            assert extra.uuid in hv.guests()
            assert extra.uuid in await hv.collect()

            # Pausing and resuming keeps the guest (no second guest_added).
            dom.suspend()
            dom.resume()
            await wait_for(lambda: not hv._tasks, what="event tasks")  # noqa: SLF001
            assert sum(1 for k, a in listener.events
                       if k == "added" and a.uuid == extra.uuid) == 1

            dom.destroy()
            await wait_for(lambda: extra.uuid in listener.removed, what="guest_removed")
            assert extra.uuid not in hv.guests()
            assert extra.uuid not in await hv.collect()

            # Stopping a guest of the node file removes it too.
            conn.lookupByUUIDString(specs[0].uuid).destroy()
            await wait_for(lambda: specs[0].uuid in listener.removed, what="guest_removed")
            assert listener.present() == {s.uuid for s in specs[1:]}
        finally:
            await hv.close()

    run(body())


def test_define_event_refreshes_balloon_min(run, node, specs):
    spec = specs[1]
    assert spec.min_guarantee_mib is None

    async def body() -> None:
        hv = LibvirtHypervisor(node_uri(node))
        await hv.start(RecordingListener())
        try:
            conn = hv.connection
            assert hv.guests()[spec.uuid].balloon_min == 0
            redefined = GuestSpec(spec.name, spec.uuid, spec.memory_kib, spec.current_kib, 700)
            conn.defineXML(domain_xml(redefined))
            await wait_for(lambda: hv.guests()[spec.uuid].balloon_min == 700 * 1024,
                           what="balloon_min refreshed")
            samples = await hv.collect()
            assert samples[spec.uuid]["balloon_min"] == 700 * 1024
        finally:
            await hv.close()

    run(body())


def test_resync_is_the_backstop_for_missed_events(run, node, specs):
    extra = guest_specs(1, prefix="missed")[0]

    async def body() -> None:
        listener = RecordingListener()
        hv = LibvirtHypervisor(node_uri(node))
        await hv.start(listener)
        try:
            conn = hv.connection
            # Silence the events, as if they had been lost.
            conn.domainEventDeregisterAny(hv._lifecycle_id)  # noqa: SLF001
            hv._lifecycle_id = None  # noqa: SLF001
            conn.createXML(domain_xml(extra), 0)
            conn.lookupByUUIDString(specs[0].uuid).destroy()
            assert extra.uuid not in listener.added
            await hv.resync()
            assert extra.uuid in listener.added
            assert specs[0].uuid in listener.removed
            assert set(hv.guests()) == {s.uuid for s in specs[1:]} | {extra.uuid}
        finally:
            await hv.close()

    run(body())


def test_thousand_guests_one_collect(run, tmp_path, capsys):
    node = write_node_xml(tmp_path / "node1000.xml", 1000)

    async def body() -> None:
        listener = RecordingListener()
        hv = LibvirtHypervisor(node_uri(node))
        started = time.perf_counter()
        await hv.start(listener)
        start_s = time.perf_counter() - started
        try:
            assert len(listener.added) == 1000
            started = time.perf_counter()
            samples = await hv.collect()
            collect_s = time.perf_counter() - started
            assert len(samples) == 1000
            assert all("balloon_cur" in s and "balloon_max" in s for s in samples.values())
        finally:
            await hv.close()
        with capsys.disabled():
            print(f"\n1000 guests (test driver, per-domain fallback): "
                  f"start {start_s * 1000:.1f} ms, one collect {collect_s * 1000:.1f} ms")

    run(body())


def test_unreachable_uri_keeps_trying_without_raising(run, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="momservice.hypervisor.libvirt")
    missing = tmp_path / "no-such-node.xml"

    async def body() -> None:
        listener = RecordingListener()
        hv = LibvirtHypervisor(node_uri(missing), reconnect_min=0.02, reconnect_max=0.05)
        await hv.start(listener)
        try:
            assert not hv.connected
            assert await hv.collect() == {}
            await hv.resync()
            # The node appears: the background retry connects.
            write_node_xml(missing, 2)
            await wait_for(lambda: hv.connected, what="connected")
            await wait_for(lambda: len(listener.added) == 2, what="guests")
            assert listener.connection == [True]
        finally:
            await hv.close()

    run(body())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


@pytest.mark.parametrize(("value", "unit", "kib"), [
    (512, "MiB", 512 * 1024), (512, "M", 512 * 1024), (1, "GiB", 1024 * 1024),
    (1000, None, 1000), (1000, "KiB", 1000), (1000, "k", 1000),
    (1, "KB", 1), (1000, "MB", 976_563), (2048, "bytes", 2), (1, "b", 1),
])
def test_to_kib(value, unit, kib):
    assert to_kib(value, unit) == kib


def test_min_guarantee_parsing():
    assert min_guarantee_kib("<domain><memtune><min_guarantee unit='MiB'>3"
                             "</min_guarantee></memtune></domain>") == 3072
    assert min_guarantee_kib("<domain><memtune/></domain>") == 0
    assert min_guarantee_kib("<domain><memtune><min_guarantee unit='parsec'>3"
                             "</min_guarantee></memtune></domain>") == 0
    assert min_guarantee_kib("not xml") == 0


def test_default_pid_dir(monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert default_pid_dir("qemu:///system") == Path("/run/libvirt/qemu")
    assert default_pid_dir("qemu+unix:///system?socket=/x") == Path("/run/libvirt/qemu")
    assert default_pid_dir("qemu:///session") == Path("/run/user/1000/libvirt/qemu/run")
    assert default_pid_dir("qemu+ssh://host/system") is None
    assert default_pid_dir("test:///default") is None
    # The constructor argument wins over the URI.
    assert LibvirtHypervisor("qemu:///system", pid_dir=Path("/x")).pid_dir == Path("/x")
