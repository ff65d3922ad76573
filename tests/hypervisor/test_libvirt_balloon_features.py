"""The balloon's features (<memballoon autodeflate/freePageReporting>) as guest fields.

On libvirt's test driver, which keeps a definition's attributes as written;
the e2e test (tests/e2e/test_guest_agent.py) checks a real QEMU guest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from momservice.hypervisor.libvirt import LibvirtHypervisor
from momservice.hypervisor.libvirt_balloon_features import balloon_features
from tests.helpers.hypervisor_listener import RecordingListener, wait_for
from tests.helpers.libvirt_node import domain_xml, guest_specs, node_uri, write_node_xml

PLAIN = "<memballoon model='virtio'>"


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
