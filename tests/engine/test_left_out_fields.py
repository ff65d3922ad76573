"""The guest fields of collectors not configured stay out of the engine's
samples, whether the hypervisor leaves them out itself (libvirt) or the
engine drops them (the simulator's hypervisor)."""

from __future__ import annotations

from pathlib import Path

import pytest

from momservice.collectors import HostCollector
from momservice.engine.core import Engine
from momservice.hypervisor.libvirt import LibvirtHypervisor
from momservice.policy import PolicySet
from momservice.simulator import make_simulation_parts
from tests.helpers.fake_host import FakeHost
from tests.helpers.libvirt_node import guest_specs, node_uri, write_node_xml

LEFT_OUT = frozenset({"mem_unused", "swap_in", "stats_age", "rss"})


def _libvirt(tmp_path: Path):
    node = write_node_xml(tmp_path / "node.xml", guest_specs(3))
    host = FakeHost(tmp_path / "host")
    host.set_memory(64 * 1024 * 1024, 32 * 1024 * 1024)
    return LibvirtHypervisor(node_uri(node)), HostCollector(host.proc, host.sys)


def _simulated(tmp_path: Path):
    hypervisor, host_collector, _ksm = make_simulation_parts(
        "sim:///?guests=3", realtime=False)
    return hypervisor, host_collector


@pytest.mark.parametrize("parts", [_libvirt, _simulated], ids=["libvirt", "simulator"])
def test_left_out_guest_fields_are_in_no_sample(run, tmp_path, parts):
    hypervisor, host_collector = parts(tmp_path)
    engine = Engine(hypervisor, host_collector, PolicySet({}), [],
                    guest_fields_left_out=LEFT_OUT)

    async def body() -> list[dict]:
        await engine.connect()
        try:
            await engine.collect_guests()
            return [dict(g.latest) for g in engine.guests.values()]
        finally:
            await engine.stop()

    samples = run(body())
    assert len(samples) == 3
    for sample in samples:
        assert "balloon_cur" in sample and "mem_available" in sample
        assert not LEFT_OUT & sample.keys()
