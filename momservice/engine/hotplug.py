"""Memory hotplug: a fresh host sample as soon as the kernel adds or removes memory."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Callable

log = logging.getLogger(__name__)

_ACTIONS = frozenset({"add", "remove", "online", "offline"})

#: The kernel's uevents: a netlink protocol (linux/netlink.h) and, in it,
#: the multicast group the kernel sends to (udevd re-sends on group 2).
NETLINK_KOBJECT_UEVENT = 15
KERNEL_UEVENTS = 1


def parse_uevent(data: bytes) -> dict[str, str]:
    """A kernel uevent's environment: after an ``action@devpath`` header,
    NUL-separated ``KEY=value`` strings (ACTION, DEVPATH, SUBSYSTEM, ...)."""
    fields = {}
    for item in data.split(b"\0")[1:]:
        key, sep, value = item.partition(b"=")
        if sep:
            fields[key.decode("ascii", "replace")] = value.decode("utf-8", "replace")
    return fields


class MemoryHotplugMonitor:
    """Watches the kernel's uevents of the ``memory`` subsystem and calls
    ``callback`` on a change."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Start listening; False (logged) where uevents cannot be had."""
        # Kernel uevents, not udevd's: they need no udevd running (and
        # memory blocks are what the kernel says they are anyway).  Read
        # from the socket itself: pyudev (with its libudev, ctypes.util and
        # tempfile) cost momd 0.9 MB.
        try:
            sock = socket.socket(socket.AF_NETLINK,
                                 socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                 NETLINK_KOBJECT_UEVENT)
        except OSError as e:  # no netlink in some containers
            log.info("memory hotplug events unavailable (%s)", e)
            return False
        try:
            sock.bind((0, KERNEL_UEVENTS))
        except OSError as e:
            sock.close()
            log.info("memory hotplug events unavailable (%s)", e)
            return False
        self._socket, self._loop = sock, loop
        loop.add_reader(sock.fileno(), self._on_readable)
        return True

    def _on_readable(self) -> None:
        changed = False
        while self._socket is not None:
            try:
                data, (sender, _) = self._socket.recvfrom(65536)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    log.warning("memory hotplug events: %s", e)
                    break
                # Events were dropped (a burst of other devices' uevents):
                # a memory block's may have been among them.
                log.info("memory hotplug: uevents lost, sampling the host again")
                changed = True
                continue
            if sender != 0:
                continue  # only the kernel's word counts
            event = parse_uevent(data)
            if event.get("SUBSYSTEM") == "memory" and event.get("ACTION") in _ACTIONS:
                log.info("memory hotplug: %s %s", event["ACTION"],
                         event.get("DEVPATH", "").rpartition("/")[2])
                changed = True
        if changed:
            self.callback()

    def stop(self) -> None:
        if self._socket is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._socket.fileno())
            self._socket.close()
        self._socket = None
