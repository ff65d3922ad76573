"""The virtio-mem guest collector: the sizes of a guest's virtio-mem device.

They come from the guest's live definition (``hypervisor/
libvirt_virtio_mem.py``), read when the guest appears and again on the
device's size-change event, so collecting them costs no call per cycle.
A guest without the device has none of them (nil in policies).
"""

from __future__ import annotations

from .base import GuestStatistics

#: Size, block size, requested and plugged memory of the device, KiB.
GUEST_VIRTIO_MEM = GuestStatistics("GuestVirtioMem", frozenset({
    "virtio_mem_max", "virtio_mem_block", "virtio_mem_requested", "virtio_mem_current"}))
