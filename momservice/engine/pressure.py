"""Wake the engine when memory pressure rises: a PSI trigger.

The kernel signals a PSI trigger with POLLPRI, while the file always polls
readable; asyncio only watches for readability.  So the trigger fd goes
into an epoll set of its own that waits for EPOLLPRI alone, and that epoll
fd (readable exactly when the trigger fired) is what the loop watches.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

#: 150 ms of stall within a 1 s window: early enough to act before the
#: host swaps, rare enough not to fire on a single slow allocation.
DEFAULT_TRIGGER = "some 150000 1000000"


class PressureTrigger:
    """Calls ``callback`` each time a PSI trigger on ``path`` fires."""

    def __init__(self, callback: Callable[[], None],
                 path: Path = Path("/proc/pressure/memory"),
                 trigger: str = DEFAULT_TRIGGER) -> None:
        self.callback = callback
        self.path = path
        self.trigger = trigger
        self._fd: int | None = None
        self._epoll: select.epoll | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def active(self) -> bool:
        return self._epoll is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Register the trigger; False (logged) when the kernel refuses."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            log.warning("memory pressure trigger unavailable (%s): reacting at the "
                        "policy interval only", e)
            return False
        try:
            os.write(fd, self.trigger.encode() + b"\0")
            epoll = select.epoll()
            epoll.register(fd, select.EPOLLPRI)
        except OSError as e:
            os.close(fd)
            log.warning("cannot register memory pressure trigger %r on %s (%s): "
                        "reacting at the policy interval only", self.trigger, self.path, e)
            return False
        self._fd, self._epoll, self._loop = fd, epoll, loop
        loop.add_reader(epoll.fileno(), self._on_ready)
        log.info("watching memory pressure: %s on %s", self.trigger, self.path)
        return True

    def _on_ready(self) -> None:
        assert self._epoll is not None
        events = self._epoll.poll(0)
        if any(mask & (select.EPOLLERR | select.EPOLLHUP) for _, mask in events):
            log.warning("memory pressure trigger on %s was closed by the kernel", self.path)
            self.stop()
            return
        if events:
            self.callback()

    def stop(self) -> None:
        """Unregister and close; safe to call twice."""
        if self._epoll is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
