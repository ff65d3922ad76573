"""The guest collectors' readers (libvirt_readers) on libvirt's own test driver.

The readers registered here are the tests' own (the shipped ones have
tests of their own); what is checked is the hypervisor's side: a reader
runs only when its collector is configured, its definition fields are
kept on the guest and read again after its events, and its per-domain
fields join each sample.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from momservice.hypervisor import libvirt_readers
from momservice.hypervisor.libvirt import LibvirtHypervisor
from momservice.hypervisor.libvirt_readers import DomainReader
from tests.helpers.hypervisor_listener import RecordingListener, wait_for
from tests.helpers.libvirt_node import guest_specs, node_uri, write_node_xml

NS = "http://example.org/mom-test/1"


def _title(xml: str) -> dict:
    node = ET.fromstring(xml).find(f"./metadata/{{{NS}}}note")
    return {"test_note": node.text if node is not None else None}


def _vcpus(dom: libvirt.virDomain) -> dict:
    return {"test_vcpus": dom.info()[3]}


READER = DomainReader("TestReader", from_xml=_title, per_domain=_vcpus,
                      events=(libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,))


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(libvirt_readers.READERS, READER.collector, READER)


@pytest.fixture
def node(tmp_path: Path) -> tuple[Path, list]:
    specs = guest_specs(2)
    return write_node_xml(tmp_path / "node.xml", specs), specs


def test_configured_reader_fills_samples_and_follows_metadata(run, registered, node):
    path, specs = node

    async def body() -> None:
        hv = LibvirtHypervisor(node_uri(path), collectors=["GuestMemory", "TestReader"])
        await hv.start(RecordingListener())
        try:
            first = await hv.collect()
            assert {u: (s["test_note"], s["test_vcpus"]) for u, s in first.items()} == {
                s.uuid: (None, 1) for s in specs}
            dom = hv.connection.lookupByUUIDString(specs[0].uuid)
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                            "<note>squeezed</note>", "t", NS, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            await wait_for(lambda: hv.guests()[specs[0].uuid].defined.get("test_note")
                           == "squeezed", what="the metadata event")
            second = await hv.collect()
            assert second[specs[0].uuid]["test_note"] == "squeezed"
            assert second[specs[1].uuid]["test_note"] is None
        finally:
            await hv.close()

    run(body())


def test_reader_of_an_unconfigured_collector_does_not_run(run, registered, node):
    path, specs = node

    async def body() -> None:
        hv = LibvirtHypervisor(node_uri(path), collectors=["GuestMemory"])
        await hv.start(RecordingListener())
        try:
            samples = await hv.collect()
        finally:
            await hv.close()
        assert set(samples) == {s.uuid for s in specs}
        assert not any("test_note" in s or "test_vcpus" in s for s in samples.values())

    run(body())
