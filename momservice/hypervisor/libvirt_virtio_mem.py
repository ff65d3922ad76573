"""virtio-mem devices in libvirt: reading their sizes, asking for a new one.

A ``<memory model='virtio-mem'>`` device gives the guest memory in blocks
of ``<block>``, up to ``<size>``: the host asks for ``<requested>``, the
guest's driver plugs or unplugs blocks until ``<current>`` (live definition
only) gets there.  libvirt changes the request with
``virDomainUpdateDeviceFlags`` on the device's own XML carrying the new
``<requested>``, and announces each change of ``<current>`` with the
memory-device size-change event: the reader below is refreshed on it, so
its fields come from the live definition, never from a call per cycle.

A guest with more than one virtio-mem device (one per NUMA node) is
managed through its first, in the definition's order: the fields and the
control are that device's.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from .libvirt_xml import to_kib

#: The guest collector's name, as ``[guest] collectors`` spells it.
COLLECTOR = "GuestVirtioMem"

#: Target element -> policy field (KiB).
_SIZES: dict[str, str] = {
    "size": "virtio_mem_max",
    "block": "virtio_mem_block",
    "requested": "virtio_mem_requested",
    "current": "virtio_mem_current",
}

#: After these events the live definition is read again: a new current size,
#: and devices plugged or unplugged.
EVENTS: tuple[int, ...] = (
    libvirt.VIR_DOMAIN_EVENT_ID_MEMORY_DEVICE_SIZE_CHANGE,
    libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
    libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
)


class NoVirtioMemDevice(ValueError):
    """The domain's live definition has no virtio-mem device."""


def _first_device(root: ET.Element) -> ET.Element | None:
    return root.find("./devices/memory[@model='virtio-mem']")


def _size_kib(node: ET.Element | None) -> int | None:
    if node is None or not (node.text or "").strip():
        return None
    try:
        return to_kib(int(node.text.strip()), node.get("unit"))
    except ValueError:
        return None


def virtio_mem_fields(domain_xml: str) -> dict[str, Any]:
    """The first virtio-mem device's sizes in KiB, {} without one.

    A malformed document or size leaves that field out (absent, nil in
    policies): a definition libvirt wrote oddly must not stop the guest
    being managed.
    """
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return {}
    device = _first_device(root)
    if device is None:
        return {}
    fields: dict[str, Any] = {}
    for element, name in _SIZES.items():
        kib = _size_kib(device.find(f"./target/{element}"))
        if kib is not None:
            fields[name] = kib
    return fields


def requested_update_xml(domain_xml: str, kib: int) -> str:
    """The first virtio-mem device's XML, as the live definition has it
    (alias and address identify it to libvirt), asking for ``kib`` KiB.

    ``<current>`` is the guest's answer, not something to update: left out.
    NoVirtioMemDevice when the definition has none.
    """
    device = _first_device(ET.fromstring(domain_xml))
    if device is None:
        raise NoVirtioMemDevice("the guest has no virtio-mem device")
    device = copy.deepcopy(device)
    target = device.find("./target")
    if target is None:
        raise NoVirtioMemDevice("the guest's virtio-mem device has no <target>")
    for current in target.findall("./current"):
        target.remove(current)
    requested = target.find("./requested")
    if requested is None:
        requested = ET.SubElement(target, "requested")
    requested.text = str(int(kib))
    requested.set("unit", "KiB")
    return ET.tostring(device, encoding="unicode")


def set_requested(dom: libvirt.virDomain, kib: int) -> None:
    """Ask the running domain's first virtio-mem device for ``kib`` KiB (live only)."""
    dom.updateDeviceFlags(requested_update_xml(dom.XMLDesc(0), kib),
                          libvirt.VIR_DOMAIN_AFFECT_LIVE)

