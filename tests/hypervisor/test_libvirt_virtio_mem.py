"""The virtio-mem reader and request on libvirt's own test driver.

The test driver keeps a ``<memory model='virtio-mem'>`` device in its
definitions (so the reader runs for real, through the hypervisor
interface), but has no ``virDomainUpdateDeviceFlags``: a request there is
"unsupported", which is what these tests check of it.  Real requests, and
the size-change event that follows them, run on QEMU guests in
tests/e2e/test_virtio_mem.py.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from momservice.hypervisor.base import HypervisorUnsupported
from momservice.hypervisor.libvirt import LibvirtHypervisor
from momservice.hypervisor.libvirt_readers import READERS
from momservice.hypervisor.libvirt_virtio_mem import (COLLECTOR, EVENTS, NoVirtioMemDevice,
                                                      requested_update_xml, virtio_mem_fields)
from tests.helpers.hypervisor_listener import RecordingListener
from tests.helpers.libvirt_node import domain_xml, guest_specs, node_uri

DEVICE = """
    <memory model='virtio-mem'>
      <target>
        <size unit='MiB'>512</size>
        <node>0</node>
        <block unit='MiB'>2</block>
        <requested unit='MiB'>128</requested>
        <current unit='KiB'>129024</current>
      </target>
      <alias name='virtiomem0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </memory>"""


def _with_device(xml: str, device: str = DEVICE) -> str:
    """A test-driver domain with the memory hotplug a virtio-mem device needs."""
    return xml.replace(
        "  <vcpu>", "  <maxMemory slots='1' unit='MiB'>2048</maxMemory>\n  <vcpu>").replace(
        "  <os>", "  <cpu><numa><cell id='0' cpus='0' memory='1024' unit='MiB'/></numa></cpu>\n"
                  "  <os>").replace("</devices>", device + "</devices>")


# -- the definition ----------------------------------------------------------------

def test_fields_are_the_first_device_sizes_in_kib():
    xml = _with_device(domain_xml(guest_specs(1)[0]))
    assert virtio_mem_fields(xml) == {"virtio_mem_max": 524288, "virtio_mem_block": 2048,
                                      "virtio_mem_requested": 131072,
                                      "virtio_mem_current": 129024}
    second = DEVICE.replace("512", "1024").replace("virtiomem0", "virtiomem1")
    assert virtio_mem_fields(_with_device(xml, second))["virtio_mem_max"] == 524288


def test_no_device_no_fields_and_odd_values_are_left_out():
    spec = guest_specs(1)[0]
    assert virtio_mem_fields(domain_xml(spec)) == {}
    assert virtio_mem_fields("<domain") == {}
    # A DIMM is not a virtio-mem device.
    dimm = "<memory model='dimm'><target><size unit='MiB'>256</size><node>0</node></target></memory>"
    assert virtio_mem_fields(_with_device(domain_xml(spec), dimm)) == {}
    odd = DEVICE.replace("<current unit='KiB'>129024</current>", "<current unit='parsec'>1</current>")
    fields = virtio_mem_fields(_with_device(domain_xml(spec), odd))
    assert "virtio_mem_current" not in fields and fields["virtio_mem_requested"] == 131072


def test_update_xml_is_the_live_device_asking_for_the_new_size():
    xml = _with_device(domain_xml(guest_specs(1)[0]))
    device = ET.fromstring(requested_update_xml(xml, 262144))
    assert device.tag == "memory" and device.get("model") == "virtio-mem"
    target = device.find("target")
    assert (target.find("requested").text, target.find("requested").get("unit")) == \
        ("262144", "KiB")
    assert target.find("current") is None
    # What identifies the device to libvirt is kept as it is.
    assert device.find("alias").get("name") == "virtiomem0"
    assert device.find("address").get("slot") == "0x03"
    assert target.find("size").text == "512" and target.find("block").text == "2"
    with pytest.raises(NoVirtioMemDevice):
        requested_update_xml(domain_xml(guest_specs(1)[0]), 1024)


def test_reader_is_registered_under_its_collector_with_its_events():
    reader = READERS[COLLECTOR]
    assert reader.from_xml is virtio_mem_fields and reader.events == EVENTS
    assert reader.stats == 0 and reader.per_domain is None


# -- through the hypervisor interface ----------------------------------------------

def _node(path: Path) -> tuple[Path, list]:
    specs = guest_specs(2)
    body = _with_device(domain_xml(specs[0])) + domain_xml(specs[1])
    path.write_text(
        "<node>\n  <cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores>"
        "<threads>1</threads><active>4</active><mhz>2000</mhz><model>x86_64</model></cpu>\n"
        f"  <memory>67108864</memory>\n{body}</node>\n")
    return path, specs


def test_samples_carry_the_device_of_guests_that_have_one(run, tmp_path):
    path, specs = _node(tmp_path / "node.xml")

    async def body() -> None:
        hv = LibvirtHypervisor(node_uri(path), collectors=["GuestMemory", COLLECTOR])
        await hv.start(RecordingListener())
        try:
            samples = await hv.collect()
            with_device, without = samples[specs[0].uuid], samples[specs[1].uuid]
            assert (with_device["virtio_mem_max"], with_device["virtio_mem_block"],
                    with_device["virtio_mem_requested"]) == (524288, 2048, 131072)
            assert not any(k.startswith("virtio_mem") for k in without)
            # The test driver has no device update: the mechanism is absent,
            # for the guest with the device as for the one without.
            for spec in specs:
                with pytest.raises(HypervisorUnsupported):
                    await hv.set_virtio_mem_requested(spec.uuid, 262144)
        finally:
            await hv.close()

    run(body())


def test_without_the_collector_nothing_is_read(run, tmp_path):
    path, specs = _node(tmp_path / "node.xml")

    async def body() -> dict:
        hv = LibvirtHypervisor(node_uri(path), collectors=["GuestMemory"])
        await hv.start(RecordingListener())
        try:
            return await hv.collect()
        finally:
            await hv.close()

    samples = run(body())
    assert set(samples) == {s.uuid for s in specs}
    assert not any(k.startswith("virtio_mem") for s in samples.values() for k in s)
