"""Whether a hypervisor URI names the simulator, without loading the simulator."""

from __future__ import annotations

from urllib.parse import urlsplit


def is_sim_uri(uri: str) -> bool:
    """Whether ``uri`` names the simulated hypervisor (scheme ``sim``)."""
    return isinstance(uri, str) and urlsplit(uri.strip()).scheme == "sim"
