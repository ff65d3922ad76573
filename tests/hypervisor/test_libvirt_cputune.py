"""GuestCpuTune's reader: the live definition's <cputune>, <vcpu> and vdsm's metadata.

Parsing is checked on definitions as libvirt 9.0 writes them; the reader's
life on a connection (read when the guest appears, again after a metadata
change) on libvirt's test driver.  Applying scheduler parameters needs the
QEMU driver with a cpu cgroup: tests/e2e/test_cputune.py does it for real.
"""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

from momservice.hypervisor.libvirt import LibvirtHypervisor
from momservice.hypervisor.libvirt_cputune import (TUNE_NAMESPACE, cputune_fields,
                                                   scheduler_parameters)
from tests.helpers.hypervisor_listener import RecordingListener, wait_for
from tests.helpers.libvirt_node import guest_specs, node_uri, write_node_xml

# What vdsm writes: an element of its own in the tune namespace, vcpuLimit below it.
VDSM_METADATA = (f"<metadata><ovirt-tune:qos xmlns:ovirt-tune='{TUNE_NAMESPACE}'>"
                 "<ovirt-tune:vcpuLimit>50</ovirt-tune:vcpuLimit></ovirt-tune:qos></metadata>")


def domain(body: str) -> str:
    return f"<domain type='kvm'><name>g</name>{body}</domain>"


def test_a_guest_never_tuned_has_the_kernels_defaults_and_no_limit():
    fields = cputune_fields(domain("<vcpu placement='static'>2</vcpu>"))
    assert fields == {"vcpu_quota": -1, "vcpu_period": 100000, "vcpu_user_limit": 100,
                      "vcpu_count": 2}


def test_tuned_guest_with_vdsms_limit_and_fewer_vcpus_online():
    fields = cputune_fields(domain(
        "<vcpu placement='static' current='3'>8</vcpu>"
        "<cputune><shares>1024</shares><period>200000</period><quota>45000</quota></cputune>"
        + VDSM_METADATA))
    assert fields == {"vcpu_quota": 45000, "vcpu_period": 200000, "vcpu_user_limit": 50,
                      "vcpu_count": 3}


@pytest.mark.parametrize("metadata, limit", [
    # Unprefixed children and other namespaces' metadata beside it.
    (f"<metadata><x:other xmlns:x='urn:x'><vcpuLimit>5</vcpuLimit></x:other>"
     f"<qos xmlns='{TUNE_NAMESPACE}'><vcpuLimit>20</vcpuLimit></qos></metadata>", 20),
    ("<metadata><x:other xmlns:x='urn:x'><vcpuLimit>5</vcpuLimit></x:other></metadata>", 100),
    (f"<metadata><qos xmlns='{TUNE_NAMESPACE}'/></metadata>", 100),
    (f"<metadata><qos xmlns='{TUNE_NAMESPACE}'><vcpuLimit>80.0</vcpuLimit></qos></metadata>", 80),
])
def test_the_limit_is_found_in_its_namespace_only(metadata, limit):
    assert cputune_fields(domain("<vcpu>1</vcpu>" + metadata))["vcpu_user_limit"] == limit


def test_garbled_values_are_left_out_not_guessed():
    fields = cputune_fields(domain(
        "<vcpu>many</vcpu><cputune><quota>lots</quota></cputune>"
        f"<metadata><qos xmlns='{TUNE_NAMESPACE}'><vcpuLimit>half</vcpuLimit></qos></metadata>"))
    assert fields == {"vcpu_quota": -1, "vcpu_period": 100000}
    assert cputune_fields("<domain") == {}


def test_scheduler_parameters_carry_only_what_is_set():
    assert scheduler_parameters(-1, None) == {"vcpu_quota": -1}
    assert scheduler_parameters(None, 100000) == {"vcpu_period": 100000}
    assert scheduler_parameters(5000, 10000) == {"vcpu_quota": 5000, "vcpu_period": 10000}


@pytest.fixture
def node(tmp_path: Path):
    specs = guest_specs(2)
    return write_node_xml(tmp_path / "node.xml", specs), specs


def test_metadata_vdsm_writes_reaches_the_samples_on_its_event(run, node):
    path, specs = node

    async def body() -> None:
        hv = LibvirtHypervisor(node_uri(path), collectors=["GuestBalloon", "GuestCpuTune"])
        await hv.start(RecordingListener())
        try:
            first = await hv.collect()
            assert {u: (s["vcpu_user_limit"], s["vcpu_count"], s["vcpu_quota"])
                    for u, s in first.items()} == {s.uuid: (100, 1, -1) for s in specs}
            dom = hv.connection.lookupByUUIDString(specs[1].uuid)
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                            "<qos><vcpuLimit>30</vcpuLimit></qos>", "ovirt-tune",
                            TUNE_NAMESPACE, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            await wait_for(lambda: hv.guests()[specs[1].uuid].defined.get("vcpu_user_limit")
                           == 30, what="the metadata change event")
            second = await hv.collect()
            assert second[specs[1].uuid]["vcpu_user_limit"] == 30
            assert second[specs[0].uuid]["vcpu_user_limit"] == 100
        finally:
            await hv.close()

    run(body())


def test_without_guest_cpu_tune_configured_nothing_is_read(run, node):
    path, specs = node

    async def body() -> dict:
        hv = LibvirtHypervisor(node_uri(path), collectors=["GuestBalloon"])
        await hv.start(RecordingListener())
        try:
            return await hv.collect()
        finally:
            await hv.close()

    samples = run(body())
    assert set(samples) == {s.uuid for s in specs}
    assert not any(k.startswith("vcpu_") for s in samples.values() for k in s)
