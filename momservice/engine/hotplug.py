"""Memory hotplug: a fresh host sample as soon as the kernel adds or removes memory."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

log = logging.getLogger(__name__)

_ACTIONS = frozenset({"add", "remove", "online", "offline"})


class MemoryHotplugMonitor:
    """Watches udev's ``memory`` subsystem and calls ``callback`` on a change."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self._monitor = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Start listening; False (logged) where udev events cannot be had."""
        try:
            import pyudev
            # Kernel uevents, not udevd's: they need no udevd running (and
            # memory blocks are what the kernel says they are anyway).
            monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
            monitor.filter_by(subsystem="memory")
            monitor.start()
        except Exception as e:  # no netlink in some containers, no pyudev in tools
            log.info("memory hotplug events unavailable (%s)", e)
            return False
        self._monitor, self._loop = monitor, loop
        loop.add_reader(monitor.fileno(), self._on_readable)
        return True

    def _on_readable(self) -> None:
        changed = False
        while (device := self._monitor.poll(timeout=0)) is not None:
            if device.action in _ACTIONS:
                log.info("memory hotplug: %s %s", device.action, device.sys_name)
                changed = True
        if changed:
            self.callback()

    def stop(self) -> None:
        if self._monitor is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._monitor.fileno())
        self._monitor = None
