"""Reading what MoM needs from libvirt domain XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

# libvirt's scaled-integer units (docs: formatdomain, "memory allocation"):
# the bare letters and the *iB names are powers of 1024, the *B names powers
# of 1000, and no unit at all means KiB.
_UNIT_BYTES: dict[str, int] = {"b": 1, "bytes": 1}
for _power, _letter in enumerate("kmgtpe", start=1):
    _UNIT_BYTES[_letter] = 1024 ** _power
    _UNIT_BYTES[f"{_letter}ib"] = 1024 ** _power
    _UNIT_BYTES[f"{_letter}b"] = 1000 ** _power


def to_kib(value: int, unit: str | None) -> int:
    """``value`` in ``unit`` as KiB, rounded up (as libvirt itself rounds)."""
    factor = _UNIT_BYTES.get((unit or "KiB").strip().lower())
    if factor is None:
        raise ValueError(f"unknown memory unit {unit!r}")
    return -(-value * factor // 1024)


def min_guarantee_kib(domain_xml: str) -> int:
    """``<memtune><min_guarantee>`` of a domain in KiB, 0 when not set.

    A malformed document or value also reads as 0: the guarantee is a hint
    for the policy and must not keep a guest from being managed.
    """
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return 0
    node = root.find("./memtune/min_guarantee")
    if node is None or not (node.text or "").strip():
        return 0
    try:
        return to_kib(int(node.text.strip()), node.get("unit"))
    except ValueError:
        return 0
