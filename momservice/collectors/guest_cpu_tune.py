"""``GuestCpuTune``: the CFS bandwidth of a guest's vCPUs and the limit asked for it.

The hypervisor reads these from the guest's live definition, kept between
the events that change it (``hypervisor/libvirt_cputune.py``); this row
names them as the guest collector MoM's configurations spell.
"""

from __future__ import annotations

from ..fields import GUEST_CPU_TUNE
from .base import GuestStatistics

#: ``vcpu_quota``, ``vcpu_period``, ``vcpu_user_limit``, ``vcpu_count``.
GUEST_CPU_TUNE_COLLECTOR = GuestStatistics("GuestCpuTune",
                                           frozenset(f.name for f in GUEST_CPU_TUNE))
