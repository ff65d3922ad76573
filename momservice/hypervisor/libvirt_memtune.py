"""libvirt's memory tunables (``<memtune>``, ``virsh memtune``): what MemTune reads and sends.

The limits are cgroup limits on the guest's QEMU process, set with
``virDomainSetMemoryParameters``: ``hard_limit`` (cgroup v1
``memory.limit_in_bytes``, v2 ``memory.max``), ``soft_limit`` (v1
``memory.soft_limit_in_bytes``, v2 ``memory.high``) and
``swap_hard_limit`` (v1 ``memory.memsw.limit_in_bytes``, v2
``memory.swap.max``).  libvirt writes the cgroup files; momd never does
(its unit keeps ``ProtectControlGroups=``).

Reading: the live definition's ``<memtune>`` carries the live limits
(libvirt 9.0 keeps them there, and leaves a limit out when it is
unlimited), so the GuestMemTune reader takes them from the definition the
hypervisor keeps per guest, not from a call per guest and cycle.  libvirt
9.0 sends no event when the limits change, so the hypervisor reads the
definition again after each change it makes (``LibvirtHypervisor.set_mem_tune``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from .libvirt_xml import to_kib

#: libvirt's VIR_DOMAIN_MEMORY_PARAM_UNLIMITED (KiB): "no limit".  The
#: Python binding does not export it.
UNLIMITED_KIB = 9007199254740991

#: The controls' and fields' policy names -> libvirt's parameter (and
#: ``<memtune>`` element) names.
PARAMETERS: dict[str, str] = {
    "mem_soft_limit": "soft_limit",
    "mem_hard_limit": "hard_limit",
    "mem_swap_hard_limit": "swap_hard_limit",
}


def memtune_fields(domain_xml: str) -> dict[str, int]:
    """The limits of a live definition's ``<memtune>``, KiB, under the policy
    names; a limit that is not set (unlimited) is left out.

    A malformed document or value reads as "no limit": the reading is a
    statistic, and must not keep a guest from being managed.
    """
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return {}
    memtune = root.find("./memtune")
    if memtune is None:
        return {}
    fields: dict[str, int] = {}
    for field, element in PARAMETERS.items():
        node = memtune.find(element)
        if node is None or not (node.text or "").strip():
            continue
        try:
            kib = to_kib(int(node.text.strip()), node.get("unit"))
        except ValueError:
            continue
        if 0 < kib < UNLIMITED_KIB:
            fields[field] = kib
    return fields


def memory_parameters(limits: Mapping[str, int]) -> dict[str, Any]:
    """``virDomainSetMemoryParameters``' typed parameters for ``limits``
    (policy names, KiB; 0 = unlimited)."""
    return {PARAMETERS[field]: (UNLIMITED_KIB if kib == 0 else int(kib))
            for field, kib in limits.items()}
