"""The balloon's features (<memballoon autodeflate/freePageReporting>) as guest fields.

On libvirt's test driver, which keeps a definition's attributes as written;
the e2e test (tests/e2e/test_guest_agent.py) checks a real QEMU guest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from momservice.hypervisor.libvirt import LibvirtHypervisor
from momservice.policy import Entity, PolicySet
from momservice.hypervisor.libvirt_balloon_features import balloon_features
from tests.helpers.hypervisor_listener import RecordingListener, wait_for
from tests.helpers.libvirt_node import domain_xml, guest_specs, node_uri, write_node_xml

PLAIN = "<memballoon model='virtio'>"
REPO = Path(__file__).resolve().parents[2]


def _with_balloon(xml: str, attributes: str) -> str:
    assert PLAIN in xml
    return xml.replace(PLAIN, f"<memballoon model='virtio' {attributes}>")


@pytest.mark.parametrize("attributes, expected", [
    ("", {"balloon_autodeflate": 0, "balloon_free_page_reporting": 0}),
    ("autodeflate='on'", {"balloon_autodeflate": 1, "balloon_free_page_reporting": 0}),
    ("autodeflate='off' freePageReporting='on'",
     {"balloon_autodeflate": 0, "balloon_free_page_reporting": 1}),
])
def test_features_of_a_virtio_balloon(attributes, expected):
    xml = _with_balloon(domain_xml(guest_specs(1)[0]), attributes)
    assert balloon_features(xml) == expected


@pytest.mark.parametrize("xml", [
    "<domain><devices/></domain>",
    "<domain><devices><memballoon model='none'/></devices></domain>",
    "not xml",
])
def test_no_balloon_no_fields(xml):
    assert balloon_features(xml) == {}


def test_guest_balloon_collector_carries_them_in_every_sample(run, tmp_path: Path):
    specs = guest_specs(2)
    path = write_node_xml(tmp_path / "node.xml", specs[:1])

    async def body() -> None:
        hv = LibvirtHypervisor(node_uri(path), collectors=["GuestMemory", "GuestBalloon"])
        await hv.start(RecordingListener())
        try:
            hv.connection.createXML(_with_balloon(
                domain_xml(specs[1]), "autodeflate='on' freePageReporting='on'"), 0)
            await wait_for(lambda: specs[1].uuid in hv.guests(), what="the new guest")
            samples = await hv.collect()
        finally:
            await hv.close()
        assert samples[specs[0].uuid]["balloon_autodeflate"] == 0
        assert samples[specs[0].uuid]["balloon_free_page_reporting"] == 0
        assert samples[specs[1].uuid]["balloon_autodeflate"] == 1
        assert samples[specs[1].uuid]["balloon_free_page_reporting"] == 1

    run(body())


def test_not_read_without_the_guest_balloon_collector(run, tmp_path: Path):
    path = write_node_xml(tmp_path / "node.xml", 1)

    async def body() -> None:
        hv = LibvirtHypervisor(node_uri(path), collectors=["GuestMemory"])
        await hv.start(RecordingListener())
        try:
            samples = await hv.collect()
        finally:
            await hv.close()
        assert samples and not any("balloon_autodeflate" in s for s in samples.values())

    run(body())


def test_the_documented_policy_tells_the_balloons_apart():
    doc = (REPO / "docs" / "mechanisms" / "balloon-features.md").read_text()
    policy = doc.split("```lisp\n", 1)[1].split("```", 1)[0]
    host = Entity.host()
    host.add_sample({"mem_available": 8 << 20, "mem_free": 4 << 20})
    guests = []
    for name, features in (("deflating", {"balloon_autodeflate": 1}),
                           ("plain", {"balloon_autodeflate": 0}), ("no-balloon", {})):
        guest = Entity.guest({"name": name, "uuid": name, "pid": 0})
        guest.add_sample({"balloon_cur": 100000, "balloon_max": 100000, "balloon_min": 0,
                          "mem_available": 100000, "mem_unused": 50000, "major_fault": 0,
                          "minor_fault": 0, "swap_in": 0, "swap_out": 0, **features})
        guests.append(guest)
    result = PolicySet({"features": policy}).evaluate(host, guests)
    assert result.error is None, result.error
    targets = {g.name: c["balloon_target"] for g, c in result.guest_controls.items()}
    assert targets == pytest.approx({"deflating": 55000, "plain": 60000, "no-balloon": 60000})
