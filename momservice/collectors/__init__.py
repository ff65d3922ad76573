"""Read-only collectors of host statistics from /proc and /sys, and the guest
collectors' choice of the hypervisor's statistics; ``registry`` lists them."""

from __future__ import annotations

from .errors import CollectionError
from .host import HostCollector
from .topology import numa_nodes

__all__ = ["CollectionError", "HostCollector", "numa_nodes"]
