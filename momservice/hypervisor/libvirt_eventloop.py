"""Binding libvirt's event loop to asyncio, once per process.

libvirt accepts one event-loop implementation per process and ignores later
registrations, so ours (libvirtaio's) is registered exactly once and before
the first connection is opened.  It is tied to one asyncio loop; a process
that runs several loops one after the other (a test suite, a service
restarted in-process) may move it to the new loop, but only while no libvirt
handle or timer is alive on the old one: otherwise events of a live
connection would land on a loop nobody runs.

Why a subclass of libvirtaio's implementation rather than the stock one:
libvirt adds, updates and removes handles and timers from whichever thread
is inside libvirt - for us also the libvirt worker thread that runs blocking
calls (a remote call stops the event loop from watching the socket while it
waits for its reply; an event read during that call arms a dispatch timer).
Stock libvirtaio then touches the asyncio loop from that thread
(``add_reader``, ``ensure_future``), which asyncio does not allow (its debug
mode raises, and otherwise the loop is not woken).  Here every such touch made
off the loop thread is handed to the loop with ``call_soon_threadsafe``, and
the handed-over step re-reads the current state (which events a descriptor
wants, whether a timer should run) instead of replaying a stale one, so the
order in which the steps run does not matter.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import libvirt
import libvirtaio

from .base import HypervisorError

_lock = threading.Lock()
_impl: "_ThreadSafeAsyncIOImpl | None" = None


class _ThreadSafeDescriptor(libvirtaio.Descriptor):
    def update(self) -> None:
        impl: _ThreadSafeAsyncIOImpl = self.impl
        if impl.on_loop_thread():
            self._reconcile()
        else:
            impl.loop.call_soon_threadsafe(self._reconcile)

    def _reconcile(self) -> None:
        # The fd may have been dropped (and even reused by a new descriptor)
        # since this step was queued: bring whatever now owns the fd in line.
        current = self.impl.descriptors.get(self.fd)
        libvirtaio.Descriptor.update(current if current is not None else self)


class _ThreadSafeDescriptorDict(libvirtaio.DescriptorDict):
    def __missing__(self, fd: int) -> libvirtaio.Descriptor:
        descriptor = _ThreadSafeDescriptor(self.impl, fd)
        self[fd] = descriptor
        return descriptor


class _ThreadSafeTimeout(libvirtaio.TimeoutCallback):
    def update(self, timeout: int) -> None:
        self.timeout = timeout
        impl: _ThreadSafeAsyncIOImpl = self.impl
        if impl.on_loop_thread():
            self._reconcile()
        else:
            impl.loop.call_soon_threadsafe(self._reconcile)

    def _reconcile(self) -> None:
        # Start or stop the timer task according to the latest timeout
        # (the running task re-reads the period on every round).
        if self.timeout >= 0 and self._task is None:
            self._task = self.impl.loop.create_task(self._timer())
        elif self.timeout < 0 and self._task is not None:
            self._task.cancel()
            self._task = None


class _ThreadSafeAsyncIOImpl(libvirtaio.virEventAsyncIOImpl):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self.descriptors = _ThreadSafeDescriptorDict(self)
        self.loop_thread = threading.get_ident()
        self._count_lock = threading.Lock()

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self.loop_thread

    def _pending_inc(self) -> None:
        with self._count_lock:
            super()._pending_inc()

    def _pending_dec(self) -> None:
        with self._count_lock:
            super()._pending_dec()

    def forget_pending(self) -> None:
        with self._count_lock:
            self._pending = 0

    def schedule_ff_callback(self, iden: int, opaque: Any) -> None:
        if self.on_loop_thread():
            super().schedule_ff_callback(iden, opaque)
        else:
            self.loop.call_soon_threadsafe(super().schedule_ff_callback, iden, opaque)

    def _add_timeout(self, timeout: int, cb: Any, opaque: Any) -> int:
        # As libvirtaio's, but with the thread-safe timer.
        callback = _ThreadSafeTimeout(self, cb, opaque)
        self.callbacks[callback.iden] = callback
        callback.update(timeout=timeout)
        self._pending_inc()
        return callback.iden


def bind_event_loop(loop: asyncio.AbstractEventLoop) -> libvirtaio.virEventAsyncIOImpl:
    """Make libvirt dispatch its events on ``loop`` (the running one);
    register the implementation on first use."""
    global _impl
    with _lock:
        if _impl is None:
            if libvirtaio.getCurrentImpl() is not None:
                # Someone registered stock libvirtaio first; libvirt would
                # ignore ours, so live with theirs.
                impl = libvirtaio.getCurrentImpl()
                if impl.loop is not loop:
                    raise HypervisorError("libvirtaio is bound to another asyncio loop")
                return impl
            # Every failure reaches us as a libvirtError; libvirt's default
            # handler would also print each one (every reconnect attempt)
            # to stderr.
            libvirt.registerErrorHandler(_ignore_error, None)
            _impl = _ThreadSafeAsyncIOImpl(loop).register()
            return _impl
        if _impl.loop is loop:
            return _impl
        stale = _impl.loop.is_closed() and not _impl.callbacks
        if _impl.is_idle() or stale:
            # Nothing is registered on the old loop (every connection was
            # closed), so the implementation can simply serve the new one.
            # Frees still queued on a loop that was closed will never run
            # (a connection closed outside any running loop leaves some):
            # forget them, or the count would pin us to the dead loop.
            if stale:
                _impl.forget_pending()
            _impl.loop = loop
            _impl.loop_thread = threading.get_ident()
            return _impl
        raise HypervisorError(
            "libvirt's event loop is bound to another asyncio loop that still "
            "has open libvirt connections")


def _ignore_error(_opaque: object, _error: object) -> None:
    pass


async def settle() -> None:
    """Let libvirtaio run the free-callbacks a closed connection scheduled.

    libvirtaio frees libvirt's opaque data in tasks it schedules on the loop
    when a handle or timer goes away; a few loop turns run them, so the
    implementation is idle again (and movable to another loop) after a close.
    """
    for _ in range(3):
        await asyncio.sleep(0)
