"""CPU tuning in libvirt: what ``GuestCpuTune`` reads and ``CpuTune`` writes.

Read from the live domain definition, never per guest per cycle: libvirt
9.0's live XML carries ``<cputune><period>``/``<quota>`` once they are set
(``setSchedulerParameters`` updates it and emits a TUNABLE event), the
vCPU count in ``<vcpu current=...>``, and the limit vdsm (or anyone) writes
as metadata (a METADATA_CHANGE event).  So the definition is read when the
guest appears and after those events, and each sample costs nothing.

A ``<cputune>`` without period or quota means libvirt left the guest's
cgroup as the kernel made it: CFS's default period and no quota.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import libvirt

#: The metadata namespace vdsm writes the guest's CPU limit in, and the
#: element (below that namespace's metadata element) holding it in percent.
TUNE_NAMESPACE = "http://ovirt.org/vm/tune/1.0"
VCPU_LIMIT_ELEMENT = "vcpuLimit"
#: No limit: all of the host's CPU time the guest's vCPUs can use.
NO_LIMIT_PERCENT = 100

#: The kernel's CFS defaults, in force while <cputune> sets nothing.
DEFAULT_PERIOD_US = 100000
UNLIMITED_QUOTA = -1

#: The events after which the definition is read again.
EVENTS: tuple[int, ...] = (libvirt.VIR_DOMAIN_EVENT_ID_TUNABLE,
                           libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE)

#: Scheduler parameter names, as setSchedulerParametersFlags takes them.
QUOTA_PARAMETER = libvirt.VIR_DOMAIN_SCHEDULER_VCPU_QUOTA   # "vcpu_quota"
PERIOD_PARAMETER = libvirt.VIR_DOMAIN_SCHEDULER_VCPU_PERIOD  # "vcpu_period"


def _int(node: ET.Element | None) -> int | None:
    if node is None:
        return None
    try:
        return int((node.text or "").strip())
    except ValueError:
        return None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def vcpu_limit(root: ET.Element) -> int | None:
    """The percentage in the tune namespace's metadata; 100 without one, None if garbled.

    vdsm keeps it in an element of its own (``<qos>``) in that namespace, with
    ``vcpuLimit`` below it; any element of that name below the namespace's
    metadata counts, whatever its prefix.
    """
    metadata = root.find("./metadata")
    if metadata is None:
        return NO_LIMIT_PERCENT
    for element in metadata:
        if not element.tag.startswith(f"{{{TUNE_NAMESPACE}}}"):
            continue
        for node in element.iter():
            if _local(node.tag) == VCPU_LIMIT_ELEMENT:
                text = (node.text or "").strip()
                try:
                    value = float(text)
                except ValueError:
                    return None
                return int(value) if value.is_integer() else None
    return NO_LIMIT_PERCENT


def cputune_fields(domain_xml: str) -> dict[str, Any]:
    """``vcpu_quota``, ``vcpu_period``, ``vcpu_user_limit``, ``vcpu_count`` of
    a live definition; a value that is garbled is left out (nil)."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return {}
    fields: dict[str, Any] = {}
    quota = _int(root.find("./cputune/quota"))
    period = _int(root.find("./cputune/period"))
    # libvirt writes neither while it is 0, "not set": the kernel's defaults hold.
    fields["vcpu_quota"] = quota if quota is not None else UNLIMITED_QUOTA
    fields["vcpu_period"] = period if period is not None else DEFAULT_PERIOD_US
    limit = vcpu_limit(root)
    if limit is not None:
        fields["vcpu_user_limit"] = limit
    vcpu = root.find("./vcpu")
    if vcpu is not None:
        try:
            fields["vcpu_count"] = int(vcpu.get("current") or (vcpu.text or "").strip())
        except ValueError:
            pass
    return fields


def scheduler_parameters(quota: int | None, period: int | None) -> dict[str, int]:
    """The typed parameters setting what is given (None: left as it is)."""
    params: dict[str, int] = {}
    if quota is not None:
        params[QUOTA_PARAMETER] = quota
    if period is not None:
        params[PERIOD_PARAMETER] = period
    return params


def set_cpu_tune(dom: libvirt.virDomain, quota: int | None, period: int | None) -> None:
    """Apply them to the running guest (its live cgroup, not its persistent definition)."""
    dom.setSchedulerParametersFlags(scheduler_parameters(quota, period),
                                    libvirt.VIR_DOMAIN_AFFECT_LIVE)
