"""MemTune on libvirt's own test driver: limits checked, sent only when changed,
read back from the live definition, refused once per guest with the reason.

The test driver implements virDomainSetMemoryParameters and keeps the live
<memtune> as the QEMU driver does (a real QEMU guest is in
tests/e2e/test_memtune.py), so the whole path runs: controller ->
LibvirtHypervisor.set_mem_tune -> libvirt -> the live XML -> the
GuestMemTune reader -> the next sample.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import libvirt
import pytest

from momservice.controllers.base import Decision
from momservice.controllers.memtune import QEMU_ALLOWANCE_KIB, MemTuneController
from momservice.errors import InvalidArgument
from momservice.hypervisor.base import HypervisorInterface, HypervisorUnsupported
from momservice.hypervisor.libvirt import LibvirtHypervisor
from momservice.hypervisor.libvirt_memtune import UNLIMITED_KIB, memtune_fields
from tests.helpers.hypervisor_listener import RecordingListener
from tests.helpers.libvirt_node import guest_specs, node_uri, write_node_xml

FLOOR = 131072
LEAST = FLOOR + QEMU_ALLOWANCE_KIB
MiB = 1024


@pytest.fixture
def node(tmp_path: Path):
    specs = guest_specs(2, min_guarantee_every=0)
    return write_node_xml(tmp_path / "node.xml", specs), specs


@contextlib.asynccontextmanager
async def _started(path: Path, collectors=("GuestBalloon", "GuestMemTune")):
    """A LibvirtHypervisor on the node file, started, and its MemTune controller."""
    hv = LibvirtHypervisor(node_uri(path), collectors=list(collectors))
    await hv.start(RecordingListener())
    try:
        yield hv, MemTuneController(hv, floor_kib=FLOOR)
    finally:
        await hv.close()


def _decision(samples, controls) -> Decision:
    return Decision(guest_controls=controls, guest_samples=samples,
                    guest_names={u: f"name-{u[:4]}" for u in samples})


def _parameters(hv: LibvirtHypervisor, uuid: str) -> dict[str, int]:
    return hv.connection.lookupByUUIDString(uuid).memoryParameters()


def test_limits_reach_libvirt_and_come_back_in_the_samples(run, node):
    path, specs = node
    a, b = specs[0].uuid, specs[1].uuid

    async def body() -> None:
        async with _started(path) as (hv, ctl):
            first = await hv.collect()
            assert not any(k.startswith("mem_") and "limit" in k for k in first[a])
            applied = await ctl.act(_decision(first, {
                a: {"mem_hard_limit": 800 * MiB, "mem_soft_limit": 600 * MiB}}))
            assert applied == {a: {"mem_soft_limit": 600 * MiB, "mem_hard_limit": 800 * MiB}}
            params = _parameters(hv, a)
            assert (params["soft_limit"], params["hard_limit"], params["swap_hard_limit"]) == (
                600 * MiB, 800 * MiB, UNLIMITED_KIB)
            assert _parameters(hv, b)["hard_limit"] == UNLIMITED_KIB
            # No event from libvirt: set_mem_tune read the definition again.
            second = await hv.collect()
            assert (second[a]["mem_soft_limit"], second[a]["mem_hard_limit"]) == (
                600 * MiB, 800 * MiB)
            assert "mem_swap_hard_limit" not in second[a] and "mem_hard_limit" not in second[b]

            # The same request again: nothing to send.
            assert await ctl.act(_decision(second, {
                a: {"mem_hard_limit": 800 * MiB, "mem_soft_limit": 600 * MiB}})) == {}
            assert ctl.operations == 1
            # 0 lifts one limit, the other stays.
            assert await ctl.act(_decision(second, {a: {"mem_soft_limit": 0}})) == {
                a: {"mem_soft_limit": 0}}
            params = _parameters(hv, a)
            assert (params["soft_limit"], params["hard_limit"]) == (UNLIMITED_KIB, 800 * MiB)
            third = await hv.collect()
            assert "mem_soft_limit" not in third[a] and third[a]["mem_hard_limit"] == 800 * MiB

    run(body())


def test_refusals_are_logged_once_per_guest_and_reason(run, node, caplog):
    path, specs = node
    a = specs[0].uuid

    async def body() -> None:
        async with _started(path) as (hv, ctl):
            samples = await hv.collect()
            below = {a: {"mem_hard_limit": LEAST - 1}}
            with caplog.at_level(logging.WARNING, "momservice.controllers.memtune"):
                for _ in range(3):
                    assert await ctl.act(_decision(samples, below)) == {}
                inverted = {a: {"mem_hard_limit": 500 * MiB, "mem_soft_limit": 600 * MiB}}
                assert await ctl.act(_decision(samples, inverted)) == {}
                assert await ctl.act(_decision(samples, {a: {"mem_hard_limit": "lots"}})) == {}
            warnings = [r.getMessage() for r in caplog.records]
            assert len(warnings) == 3, warnings
            assert "below the guest's floor" in warnings[0] and f"{LEAST} KiB" in warnings[0]
            assert "mem_soft_limit 614400 KiB is above mem_hard_limit 512000 KiB" in warnings[1]
            assert "'lots'" in warnings[2]
            assert _parameters(hv, a)["hard_limit"] == UNLIMITED_KIB
            # Exactly the floor is allowed.
            assert await ctl.act(_decision(samples, {a: {"mem_hard_limit": LEAST}})) == {
                a: {"mem_hard_limit": LEAST}}

    run(body())


def test_manual_limits_are_checked_and_swap_limit_kept_above_hard(run, node):
    path, specs = node
    a = specs[0].uuid

    async def body() -> None:
        async with _started(path) as (hv, ctl):
            sample = (await hv.collect())[a]
            with pytest.raises(InvalidArgument, match="mem_swap_hard_limit is unlimited|"
                                                      "mem_hard_limit is unlimited"):
                await ctl.set_limits(a, {"mem_swap_hard_limit": 900 * MiB}, sample)
            after = await ctl.set_limits(a, {"mem_hard_limit": 700 * MiB,
                                             "mem_swap_hard_limit": 900 * MiB}, sample)
            assert after == {"mem_soft_limit": 0, "mem_hard_limit": 700 * MiB,
                             "mem_swap_hard_limit": 900 * MiB}
            assert _parameters(hv, a)["swap_hard_limit"] == 900 * MiB
            sample = (await hv.collect())[a]
            assert sample["mem_swap_hard_limit"] == 900 * MiB
            with pytest.raises(InvalidArgument, match="above mem_swap_hard_limit"):
                await ctl.set_limits(a, {"mem_hard_limit": 1000 * MiB}, sample)

    run(body())


def test_without_the_collector_the_controller_remembers_what_it_sent(run, node):
    path, specs = node
    a = specs[0].uuid

    async def body() -> None:
        async with _started(path, collectors=("GuestBalloon",)) as (hv, ctl):
            samples = await hv.collect()
            request = {a: {"mem_hard_limit": 700 * MiB}}
            assert await ctl.act(_decision(samples, request)) == request
            samples = await hv.collect()
            assert "mem_hard_limit" not in samples[a]
            assert await ctl.act(_decision(samples, request)) == {}
            assert ctl.operations == 1

    run(body())


def test_dry_run_sends_nothing(run, node):
    path, specs = node
    a = specs[0].uuid

    async def body() -> None:
        async with _started(path) as (hv, ctl):
            ctl.dry_run = True
            samples = await hv.collect()
            assert await ctl.act(_decision(samples, {a: {"mem_hard_limit": 700 * MiB}})) == {
                a: {"mem_hard_limit": 700 * MiB}}
            assert _parameters(hv, a)["hard_limit"] == UNLIMITED_KIB

    run(body())


class _NoTunables(HypervisorInterface):
    """An interface that, like an old driver, has not implemented set_mem_tune:
    only the base class's default is under test (no real one lacks it)."""

    uri = "none:///"
    connected = True

    async def start(self, listener) -> None: ...
    async def close(self) -> None: ...
    def guests(self): return {}
    async def resync(self) -> None: ...
    async def collect(self): return {}
    async def set_balloon_target(self, uuid, kib) -> None: ...


def test_a_hypervisor_without_tunables_leaves_the_mechanism_absent(run, caplog):
    ctl = MemTuneController(_NoTunables(), floor_kib=FLOOR)
    u = "00000000-0000-0000-0000-00000000000a"
    samples = {u: {"balloon_min": 0}}
    with caplog.at_level(logging.WARNING, "momservice.controllers.memtune"):
        for _ in range(2):
            assert run(ctl.act(_decision(samples, {u: {"mem_hard_limit": 700 * MiB}}))) == {}
    assert len(caplog.records) == 1 and "no memory tunables" in caplog.records[0].getMessage()
    with pytest.raises(HypervisorUnsupported):
        run(ctl.set_limits(u, {"mem_hard_limit": 700 * MiB}, samples[u]))


def test_memtune_fields_read_units_and_leave_unlimited_out():
    xml = ("<domain><memtune><hard_limit unit='MiB'>512</hard_limit>"
           "<soft_limit>262144</soft_limit>"
           f"<swap_hard_limit unit='KiB'>{UNLIMITED_KIB}</swap_hard_limit>"
           "<min_guarantee unit='KiB'>1024</min_guarantee></memtune></domain>")
    assert memtune_fields(xml) == {"mem_hard_limit": 524288, "mem_soft_limit": 262144}
    assert memtune_fields("<domain/>") == {}
    assert memtune_fields("not xml") == {}
    assert memtune_fields("<domain><memtune><hard_limit>x</hard_limit></memtune></domain>") == {}
    assert libvirt.VIR_DOMAIN_EVENT_ID_TUNABLE  # the event the reader listens to exists


def test_a_libvirt_refusal_is_logged_once_and_the_other_guests_go_on(run, node, caplog):
    path, specs = node
    a = specs[0].uuid
    gone = "0badc0de-0000-0000-0000-000000000000"     # no such domain in libvirt

    async def body() -> None:
        async with _started(path) as (hv, ctl):
            samples = dict(await hv.collect())
            samples[gone] = {"balloon_min": 0}
            request = {gone: {"mem_hard_limit": 700 * MiB}, a: {"mem_hard_limit": 700 * MiB}}
            with caplog.at_level(logging.WARNING, "momservice.controllers.memtune"):
                assert await ctl.act(_decision(samples, request)) == {
                    a: {"mem_hard_limit": 700 * MiB}}
                assert await ctl.act(_decision(samples, request)) == {}
            assert len(caplog.records) == 1, [r.getMessage() for r in caplog.records]
            assert gone in caplog.records[0].getMessage()
            assert "libvirt refused" in caplog.records[0].getMessage()

    run(body())
