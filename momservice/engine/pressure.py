"""Wake the engine when memory pressure rises: a PSI trigger.

The kernel signals a PSI trigger with POLLPRI and consumes the event when
the file is polled, so it cannot sit behind asyncio (which watches only for
readability, and a nested epoll would swallow the event while checking it).
One small thread waits in poll() for POLLPRI and hands each event to the
loop with call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import threading
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

#: 150 ms of stall within a 1 s window: early enough to act before the
#: host swaps, rare enough not to fire on a single slow allocation.
DEFAULT_TRIGGER = "some 150000 1000000"
#: The same ratio in a 2 s window, for kernels that allow only windows in
#: multiples of 2 s to processes without CAP_SYS_RESOURCE.
UNPRIVILEGED_TRIGGER = "some 300000 2000000"


class PressureTrigger:
    """Calls ``callback`` on the loop each time a PSI trigger on ``path`` fires."""

    def __init__(self, callback: Callable[[], None],
                 path: Path = Path("/proc/pressure/memory"),
                 triggers: tuple[str, ...] = (DEFAULT_TRIGGER, UNPRIVILEGED_TRIGGER)) -> None:
        self.callback = callback
        self.path = path
        self.triggers = triggers
        self.trigger: str | None = None  # the one the kernel accepted
        self._fd: int | None = None
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self._thread is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Register the trigger; False (logged) when the kernel refuses."""
        refusals = []
        for trigger in self.triggers:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as e:
                log.warning("memory pressure trigger unavailable (%s): reacting at the "
                            "policy interval only", e)
                return False
            try:
                # A trigger is bound to the open file: each try needs its own.
                os.write(fd, trigger.encode() + b"\0")
                break
            except OSError as e:
                os.close(fd)
                refusals.append(f"{trigger!r}: {e.strerror}")
        else:
            log.warning("cannot register a memory pressure trigger on %s (%s): "
                        "reacting at the policy interval only", self.path, "; ".join(refusals))
            return False
        self.trigger, self._fd = trigger, fd
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._wait, args=(loop,),
                                        name="psi-trigger", daemon=True)
        self._thread.start()
        log.info("watching memory pressure: %s on %s", trigger, self.path)
        return True

    def _wait(self, loop: asyncio.AbstractEventLoop) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLPRI)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            events = dict(poller.poll())
            if self._wake_r in events:
                return
            mask = events.get(self._fd, 0)
            if mask & (select.POLLERR | select.POLLNVAL):
                log.warning("memory pressure trigger on %s was closed by the kernel", self.path)
                return
            if mask & select.POLLPRI:
                try:
                    loop.call_soon_threadsafe(self.callback)
                except RuntimeError:  # the loop is closed: we are shutting down
                    return

    def stop(self) -> None:
        """Stop the thread and close the trigger; safe to call twice."""
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=5)
            self._thread = None
        for fd in (self._fd, self._wake_r, self._wake_w):
            if fd is not None:
                os.close(fd)
        self._fd = self._wake_r = self._wake_w = None
