"""Read-only collectors of host statistics from /proc and /sys."""

from __future__ import annotations

from .errors import CollectionError
from .host import HostCollector
from .topology import numa_nodes

__all__ = ["CollectionError", "HostCollector", "numa_nodes"]
