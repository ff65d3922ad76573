"""Hypervisor interfaces: where guests and their statistics come from.

``base`` defines the interface the engine relies on; ``libvirt`` implements
it for a libvirt connection (a simulated one arrives later).
"""

from .base import GuestInfo, HypervisorError, HypervisorInterface, HypervisorListener

__all__ = ["GuestInfo", "HypervisorError", "HypervisorInterface", "HypervisorListener"]
