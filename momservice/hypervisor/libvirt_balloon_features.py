"""What a guest's balloon does by itself, from its ``<memballoon>`` definition.

Two attributes of libvirt's virtio balloon change what a policy can expect
of it:

- ``autodeflate='on'`` (QEMU's ``deflate-on-oom``): the guest's driver
  deflates the balloon on its own when the guest runs out of memory, so a
  target set too low costs the guest less than an OOM kill -- and the
  balloon may be found bigger than the target last set;
- ``freePageReporting='on'``: the guest hands the pages it frees back to
  the host by itself (the host's RSS of the guest shrinks without any
  balloon move).

Read as the GuestBalloon collector's ``balloon_autodeflate`` and
``balloon_free_page_reporting`` (0 off, 1 on; absent for a guest without
a balloon device), from the live definition: neither can change while the
guest runs.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

#: ``<memballoon>`` attribute -> field.
FEATURE_FIELDS: dict[str, str] = {
    "autodeflate": "balloon_autodeflate",
    "freePageReporting": "balloon_free_page_reporting",
}


def balloon_features(domain_xml: str) -> dict[str, Any]:
    """The balloon's features as 0/1 fields; {} without a balloon device."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return {}
    balloon = root.find("./devices/memballoon")
    if balloon is None or balloon.get("model", "none") == "none":
        return {}
    # libvirt leaves an attribute out when it is off (its default).
    return {field: int(balloon.get(attribute) == "on")
            for attribute, field in FEATURE_FIELDS.items()}
