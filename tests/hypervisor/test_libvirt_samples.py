"""How LibvirtHypervisor makes its samples, against libvirt's test driver:
a guest read the same as last time gives the previous objects again, and
the fields the engine leaves out are not made at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from momservice.hypervisor.libvirt import LibvirtHypervisor
from tests.helpers.hypervisor_listener import RecordingListener
from tests.helpers.libvirt_node import GuestSpec, guest_specs, node_uri, write_node_xml


@pytest.fixture
def specs() -> list[GuestSpec]:
    return guest_specs(4)


@pytest.fixture
def node(tmp_path: Path, specs: list[GuestSpec]) -> Path:
    return write_node_xml(tmp_path / "node.xml", specs)


def test_a_repeated_read_reuses_the_previous_objects_and_a_change_shows(run, node, specs):
    async def body() -> None:
        hv = LibvirtHypervisor(node_uri(node), collectors=("GuestMemory", "GuestBalloon"))
        await hv.start(RecordingListener())
        try:
            first = await hv.collect()
            second = await hv.collect()
            for spec in specs:
                before, after = first[spec.uuid], second[spec.uuid]
                assert before is not after and before.keys() == after.keys()
                # The test driver's numbers repeat: the very same objects,
                # but for the age of the statistics, computed anew.
                assert all(after[k] is before[k] for k in after if k != "stats_age")
                assert after["stats_age"] >= before["stats_age"]
            # A sample given out is the caller's: changing it changes no later one.
            second[specs[0].uuid]["balloon_cur"] = 1
            target = specs[1].memory_kib // 2
            await hv.set_balloon_target(specs[1].uuid, target)
            third = await hv.collect()
            assert third[specs[0].uuid]["balloon_cur"] == specs[0].current_kib
            assert third[specs[1].uuid]["balloon_cur"] == target
            assert third[specs[1].uuid]["balloon_max"] is first[specs[1].uuid]["balloon_max"]
            assert third[specs[2].uuid]["balloon_cur"] is first[specs[2].uuid]["balloon_cur"]
        finally:
            await hv.close()

    run(body())


def test_left_out_fields_are_not_made(run, node, specs):
    left_out = frozenset({"mem_unused", "stats_age", "balloon_min", "balloon_autodeflate",
                          "rss"})

    async def body() -> None:
        hv = LibvirtHypervisor(node_uri(node), collectors=("GuestMemory", "GuestBalloon"))
        assert hv.leave_out(left_out) is True
        await hv.start(RecordingListener())
        try:
            samples = [await hv.collect() for _ in range(2)]
        finally:
            await hv.close()
        for collected in samples:
            assert set(collected) == {s.uuid for s in specs}
            for sample in collected.values():
                assert not left_out & sample.keys()
                assert {"balloon_cur", "balloon_max", "mem_available",
                        "balloon_free_page_reporting"} <= sample.keys()

    run(body())
