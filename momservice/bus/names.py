"""The contract's names as bus/server.py and bus/publisher.py import them.

They are defined in ``momservice.contract``; import them from there.  This
module only keeps those two importers working until they do.
"""

from ..contract import BUS_NAME, HOST_PATH, MANAGER_PATH, guest_path

__all__ = ["BUS_NAME", "HOST_PATH", "MANAGER_PATH", "guest_path"]
