"""Block I/O limits in libvirt: what the IoTune collectors read, what the mechanism sends.

Everything comes from the domain's live definition, read when the guest
appears and again after a metadata change, a tunable change (libvirt
emits one after every setBlockIoTune), a device added or removed or a
redefinition; nothing is asked per guest per collection:

- the disks: ``<devices><disk>``, their target (``vda``) and source
  (file, block device, volume or network name);
- their current limits: each disk's ``<iotune>`` (libvirt writes there
  what QEMU applies);
- the limits the policy works between: the domain metadata in mom's
  namespace ``METADATA_NS`` (docs/mechanisms/iotune.md)::

    <metadata>
      <iotune xmlns="http://ovirt.org/mom/iotune/1.0">
        <device name="vda">              <!-- or path="/var/lib/...", or both -->
          <guaranteed><total_bytes_sec>1048576</total_bytes_sec></guaranteed>
          <maximum><total_bytes_sec>10485760</total_bytes_sec>
                   <total_iops_sec>200</total_iops_sec></maximum>
        </device>
      </iotune>
    </metadata>

A limit may also be written as an attribute (``<maximum total_iops_sec="200"/>``);
one not given is 0, unlimited.  A device is matched to a disk by path when
both have one, else by target name (as MoM matched vdsm's devices); one
that matches no disk is left out.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

import libvirt

from ..policy.iotune_value import (IO_LIMIT_KEYS, IO_TUNE, IO_TUNE_CURRENT, DiskIoTune,
                                   IoLimits, IoTuneDevice)

Fields = dict[str, Any]

log = logging.getLogger(__name__)

#: mom's namespace for the limits in a domain's metadata.
METADATA_NS = "http://ovirt.org/mom/iotune/1.0"
#: The prefix ``virsh metadata`` and ``setMetadata`` are given for it.
METADATA_KEY = "mom-iotune"

#: Where a disk's source is named, by attribute of ``<source>``, in order.
_SOURCE_ATTRIBUTES = ("file", "dev", "volume", "name", "dir")

#: The events after which a guest's disks, limits or metadata may differ.
EVENTS: tuple[int, ...] = (
    libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
    libvirt.VIR_DOMAIN_EVENT_ID_TUNABLE,
    libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
    libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
)


def _local(tag: str) -> str:
    # libvirt may or may not carry the namespace down to the children.
    return tag.rsplit("}", 1)[-1]


def _limits(node: ET.Element | None, who: str) -> IoLimits:
    """The limits written under ``node`` (elements or attributes)."""
    if node is None:
        return IoLimits()
    values: dict[str, int] = {}
    given = {_local(k): v for k, v in node.attrib.items()}
    given.update({_local(child.tag): (child.text or "") for child in node})
    for key in IO_LIMIT_KEYS:
        text = given.get(key)
        if text is None:
            continue
        try:
            value = int(text.strip())
            if value < 0:
                raise ValueError("negative")
        except ValueError:
            log.warning("guest %s: ignoring I/O limit %s=%r: not a whole number >= 0",
                        who, key, text)
            continue
        values[key] = value
    return IoLimits(values)


def _disks(root: ET.Element, who: str) -> list[tuple[str, str | None, IoLimits]]:
    """(target, source, current limits) of each disk of a live definition."""
    disks = []
    for disk in root.findall("./devices/disk"):
        target = disk.find("target")
        name = target.get("dev") if target is not None else None
        if not name:
            continue
        source = disk.find("source")
        path = None
        if source is not None:
            path = next((source.get(a) for a in _SOURCE_ATTRIBUTES if source.get(a)), None)
        disks.append((name, path, _limits(disk.find("iotune"), who)))
    return disks


def _policy_devices(root: ET.Element, who: str) -> list[tuple[str | None, str | None,
                                                               IoLimits, IoLimits]] | None:
    """(name, path, guaranteed, maximum) per device of mom's metadata; None without it."""
    node = root.find(f"./metadata/{{{METADATA_NS}}}iotune")
    if node is None:
        return None
    devices = []
    for device in node:
        if _local(device.tag) != "device":
            continue
        name, path = device.get("name") or None, device.get("path") or None
        if name is None and path is None:
            log.warning("guest %s: an I/O limits device without name or path is ignored", who)
            continue
        parts = {_local(child.tag): child for child in device}
        devices.append((name, path, _limits(parts.get("guaranteed"), who),
                        _limits(parts.get("maximum"), who)))
    return devices


def _matches(name: str | None, path: str | None, disk_name: str, disk_path: str | None) -> bool:
    if path is not None and disk_path is not None:
        return path == disk_path
    return name is not None and name == disk_name


def read_io_tune(domain_xml: str) -> Fields:
    """``io_tune`` (the disks mom's metadata gives limits for; absent without
    that metadata) and ``io_tune_current`` (every disk) of a live definition."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return {}
    who = root.findtext("name") or "?"
    disks = _disks(root, who)
    fields: Fields = {IO_TUNE_CURRENT: [DiskIoTune(n, p, limits) for n, p, limits in disks]}
    devices = _policy_devices(root, who)
    if devices is None:
        log.debug("guest %s has no I/O limits in its metadata (%s)", who, METADATA_NS)
        return fields
    tunes = []
    for disk_name, disk_path, current in disks:
        for name, path, guaranteed, maximum in devices:
            if _matches(name, path, disk_name, disk_path):
                tunes.append(IoTuneDevice(disk_name, disk_path, guaranteed, maximum, current))
                break
    fields[IO_TUNE] = tunes
    return fields


#: The limits libvirt sets together: given one of a group, it makes the
#: others of the group 0 unless they are given too.
GROUPS: tuple[tuple[str, ...], ...] = (IO_LIMIT_KEYS[:3], IO_LIMIT_KEYS[3:])


def block_io_tune_params(limits: Mapping[str, Any],
                         now: Mapping[str, Any] | None = None) -> dict[str, int]:
    """The parameters of ``virDomainSetBlockIoTune`` for ``limits`` (libvirt's
    typed parameter names are the limits' own); each group touched is made
    whole with the disk's limits ``now``, so that those stay as they are."""
    params = {key: int(limits[key]) for key in IO_LIMIT_KEYS if key in limits}
    for group in GROUPS:
        if any(key in params for key in group):
            for key in group:
                params.setdefault(key, int((now or {}).get(key) or 0))
    return params


def set_block_io_tune(dom: libvirt.virDomain, device: str, limits: Mapping[str, Any]) -> None:
    """Apply ``limits`` to disk ``device`` (target or source) of the running
    domain, leaving its other limits as they are.

    The disk's limits are read first (one call, only when something is to
    change): the copy in mom's samples may be a collection behind.
    """
    now = dom.blockIoTune(device, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    dom.setBlockIoTune(device, block_io_tune_params(limits, now),
                       libvirt.VIR_DOMAIN_AFFECT_LIVE)
