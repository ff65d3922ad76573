"""MoM's GuestIoTune and GuestIoTuneOptional: each guest's disks and their I/O limits.

The hypervisor reads them from the guest's live definition (libvirt:
``hypervisor/libvirt_iotune.py``; docs/mechanisms/iotune.md).  MoM's
GuestIoTune made them required, so that a guest without limits was kept
out of the policies altogether, balloon included; in mom both names give
the same optional fields: a guest without limits reads ``io_tune`` as nil.
"""

from __future__ import annotations

from ..policy.iotune_value import IO_TUNE, IO_TUNE_CURRENT
from .base import GuestStatistics

#: The disks with limits (``io_tune``) and every disk's current limits.
GUEST_IO_TUNE = GuestStatistics("GuestIoTune", frozenset({IO_TUNE, IO_TUNE_CURRENT}))
#: The same, under MoM's name for "no error when absent".
GUEST_IO_TUNE_OPTIONAL = GuestStatistics("GuestIoTuneOptional",
                                         frozenset({IO_TUNE, IO_TUNE_CURRENT}))
