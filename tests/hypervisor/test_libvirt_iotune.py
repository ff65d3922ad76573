"""The IoTune collectors' reader and the block I/O tune call (hypervisor/libvirt_iotune.py).

The parsing is checked on definitions written here; the hypervisor's side
(reader configured, metadata and tunable events followed, the call
reaching libvirt) on libvirt's own test driver.
"""

from __future__ import annotations

import logging
from pathlib import Path

import libvirt
import pytest

from momservice.hypervisor.base import HypervisorError
from momservice.hypervisor.libvirt import LibvirtHypervisor
from momservice.hypervisor.libvirt_iotune import (METADATA_KEY, METADATA_NS,
                                                  block_io_tune_params, read_io_tune)
from momservice.policy.iotune_value import DiskIoTune, IoLimits
from tests.helpers.hypervisor_listener import RecordingListener, wait_for
from tests.helpers.libvirt_node import guest_specs, node_uri, write_node_xml

UUID = "12345678-1234-1234-1234-1234567890ab"


def domain(metadata: str = "", disks: str | None = None) -> str:
    if disks is None:
        disks = """
        <disk type='file' device='disk'><source file='/images/a.raw'/>
          <target dev='vda' bus='virtio'/>
          <iotune><total_bytes_sec>1000</total_bytes_sec><read_iops_sec>7</read_iops_sec>
          </iotune></disk>
        <disk type='block' device='disk'><source dev='/dev/sdz'/>
          <target dev='vdb' bus='virtio'/></disk>
        <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>"""
    return f"""<domain type='test'><name>disky</name><uuid>{UUID}</uuid>
      <memory unit='KiB'>1048576</memory><vcpu>1</vcpu>
      <os><type arch='x86_64'>hvm</type></os>
      <devices>{disks}<memballoon model='virtio'/></devices>
      {f"<metadata>{metadata}</metadata>" if metadata else ""}</domain>"""


def limits_xml(devices: str) -> str:
    return f"<mom-iotune:iotune xmlns:mom-iotune='{METADATA_NS}'>{devices}</mom-iotune:iotune>"


def test_every_disk_with_its_current_limits_and_no_io_tune_without_metadata():
    fields = read_io_tune(domain())
    assert "io_tune" not in fields
    assert fields["io_tune_current"] == [
        DiskIoTune("vda", "/images/a.raw", IoLimits({"total_bytes_sec": 1000, "read_iops_sec": 7})),
        DiskIoTune("vdb", "/dev/sdz", IoLimits()),
        DiskIoTune("hdc", None, IoLimits()),
    ]


def test_devices_match_disks_by_path_else_by_name(caplog):
    devices = limits_xml(
        "<mom-iotune:device name='vdX' path='/dev/sdz'>"      # the path decides: vdb
        "<mom-iotune:maximum><mom-iotune:total_iops_sec>50</mom-iotune:total_iops_sec>"
        "</mom-iotune:maximum></mom-iotune:device>"
        "<mom-iotune:device name='vda'>"                     # no path: by name
        "<mom-iotune:guaranteed read_bytes_sec='10'/>"
        "<mom-iotune:maximum read_bytes_sec='100' write_iops_sec='-3'/></mom-iotune:device>"
        "<mom-iotune:device name='vdq'><mom-iotune:maximum/></mom-iotune:device>"  # no disk
        "<mom-iotune:device/>")
    with caplog.at_level(logging.WARNING):
        tunes = read_io_tune(domain(devices))["io_tune"]
    assert [(t.name, t.path) for t in tunes] == [("vda", "/images/a.raw"), ("vdb", "/dev/sdz")]
    vda, vdb = tunes
    assert vda.guaranteed == IoLimits({"read_bytes_sec": 10})
    assert vda.maximum == IoLimits({"read_bytes_sec": 100})           # -3 refused: 0
    assert vda.current == IoLimits({"total_bytes_sec": 1000, "read_iops_sec": 7})
    assert vdb.maximum == IoLimits({"total_iops_sec": 50}) and vdb.guaranteed == IoLimits()
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "write_iops_sec='-3'" in messages and "without name or path" in messages


def test_metadata_without_a_matching_disk_gives_an_empty_list():
    fields = read_io_tune(domain(limits_xml("<mom-iotune:device name='vdq'/>")))
    assert fields["io_tune"] == []


def test_a_garbled_definition_gives_nothing():
    assert read_io_tune("<domain") == {}


def test_a_group_touched_is_sent_whole_with_the_other_limits_as_they_are():
    now = {"total_bytes_sec": 0, "read_bytes_sec": 5, "write_bytes_sec": 6,
           "total_iops_sec": 7, "read_iops_sec": 0, "write_iops_sec": 0, "group_name": ""}
    assert block_io_tune_params({"read_bytes_sec": 50}, now) == {
        "read_bytes_sec": 50, "total_bytes_sec": 0, "write_bytes_sec": 6}
    assert block_io_tune_params({"total_iops_sec": 0.0, "write_iops_sec": 9}, now) == {
        "total_iops_sec": 0, "write_iops_sec": 9, "read_iops_sec": 0}


@pytest.fixture
def node(tmp_path: Path) -> Path:
    return write_node_xml(tmp_path / "node.xml", guest_specs(1))


def test_the_collector_follows_metadata_changes_on_libvirts_test_driver(run, node):
    async def body() -> None:
        hv = LibvirtHypervisor(node_uri(node), collectors=["GuestMemory", "GuestIoTune"])
        await hv.start(RecordingListener())
        try:
            dom = hv.connection.createXML(domain(), 0)
            await wait_for(lambda: UUID in hv.guests(), what="the new guest")
            first = (await hv.collect())[UUID]
            assert "io_tune" not in first and len(first["io_tune_current"]) == 3
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                            "<iotune><device name='vda'><maximum total_iops_sec='40'/>"
                            "</device></iotune>", METADATA_KEY, METADATA_NS,
                            libvirt.VIR_DOMAIN_AFFECT_LIVE)
            await wait_for(lambda: "io_tune" in hv.guests()[UUID].defined,
                           what="the metadata event")
            (tune,) = (await hv.collect())[UUID]["io_tune"]
            assert tune.name == "vda" and tune.maximum == IoLimits({"total_iops_sec": 40})

            # The call reaches libvirt, its refusal comes back as a HypervisorError
            # (the test driver refuses a limit above a burst maximum of 0, which
            # QEMU's driver does not: tests/e2e/test_iotune.py applies them for real).
            await hv.set_io_tune(UUID, "vdb", {"total_bytes_sec": 0})
            assert dom.blockIoTune("vdb", 0)["total_bytes_sec"] == 0
            with pytest.raises(HypervisorError, match="cannot be set higher"):
                await hv.set_io_tune(UUID, "vdb", {"total_bytes_sec": 10})
            with pytest.raises(HypervisorError, match="vdz"):
                await hv.set_io_tune(UUID, "vdz", {"total_bytes_sec": 0})
        finally:
            await hv.close()

    run(body())


def test_without_the_collector_nothing_is_read(run, node):
    async def body() -> dict:
        hv = LibvirtHypervisor(node_uri(node), collectors=["GuestMemory"])
        await hv.start(RecordingListener())
        try:
            hv.connection.createXML(domain(limits_xml("<mom-iotune:device name='vda'/>")), 0)
            await wait_for(lambda: UUID in hv.guests(), what="the new guest")
            return await hv.collect()
        finally:
            await hv.close()

    samples = run(body())
    assert not any("io_tune" in s or "io_tune_current" in s for s in samples.values())
