"""The hypervisor interface for a libvirt connection.

One connection, driven from asyncio through libvirt-python's own event-loop
integration (libvirtaio): lifecycle events add and remove guests as they
happen, ``resync`` is the backstop, and one bulk statistics call per
``collect`` samples every running guest.  When the daemon goes away the
interface keeps running, reports the outage once and reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar
from urllib.parse import urlsplit

import libvirt

from ..journal_fields import guest_fields
from .base import (READ_TIME_FIELD, GuestInfo, HypervisorError, HypervisorInterface,
                   HypervisorListener, HypervisorUnsupported)
from .libvirt_cputune import set_cpu_tune
from .libvirt_eventloop import bind_event_loop, settle
from .libvirt_iotune import set_block_io_tune
from .libvirt_memtune import memory_parameters
from .libvirt_readers import DomainReader, definition_fields, readers_for
from .libvirt_virtio_mem import NoVirtioMemDevice, set_requested
from .libvirt_xml import min_guarantee_kib

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Bulk statistics (``getAllDomainStats``, balloon group) -> policy field.
BULK_BALLOON_FIELDS: dict[str, str] = {
    "balloon.current": "balloon_cur",
    "balloon.maximum": "balloon_max",
    "balloon.unused": "mem_unused",
    "balloon.available": "mem_available",
    "balloon.usable": "mem_usable",
    "balloon.disk_caches": "disk_caches",
    "balloon.swap_in": "swap_in",
    "balloon.swap_out": "swap_out",
    "balloon.major_fault": "major_fault",
    "balloon.minor_fault": "minor_fault",
    "balloon.rss": "rss",
}
_BULK_LAST_UPDATE = "balloon.last-update"
#: What ``dict.get`` gives for a key a dict does not have (None is a value).
_ABSENT = object()
#: Distinct sets of statistics keys kept as one tuple for every guest; a
#: driver varying them more is not expected, and past that each guest keeps its own.
_SHARED_READ_KEYS = 64

#: The types of the definition fields shared by guests (see _defined).
_PLAIN = frozenset({int, float, bool, str, type(None)})

#: Per-domain ``memoryStats()`` keys -> policy field (the fallback path).
MEMORY_STATS_FIELDS: dict[str, str] = {
    "unused": "mem_unused",
    "available": "mem_available",
    "usable": "mem_usable",
    "disk_caches": "disk_caches",
    "swap_in": "swap_in",
    "swap_out": "swap_out",
    "major_fault": "major_fault",
    "minor_fault": "minor_fault",
    "rss": "rss",
}
_STATS_LAST_UPDATE = "last_update"

# Lifecycle events that make a domain a running guest, or stop it being one.
_ADDING_EVENTS = frozenset({
    libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_RESUMED,
})
_REMOVING_EVENTS = frozenset({
    libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_CRASHED,
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN,
})

# Errors meaning "this domain is gone / not running any more": the guest is
# skipped, the lifecycle event (or the next resync) removes it.
_DOMAIN_GONE = frozenset({
    libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID,
})
# Errors that may mean the connection itself broke; confirmed with isAlive()
# or the message, because the same codes also report ordinary failures.
_MAYBE_DISCONNECTED = frozenset({
    libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR,
    libvirt.VIR_ERR_RPC,
})
_DISCONNECTED = frozenset({libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN})
# Errors meaning "this driver or this guest does not have that": the
# mechanism is absent for the guest, not failing.
_UNSUPPORTED = frozenset({
    libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
})
_DISCONNECT_MESSAGES = (
    "client socket is closed", "end of file", "broken pipe",
    "connection reset", "cannot recv data", "cannot write data",
    "connection closed",
)

_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "socket error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "end of file",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by client",
}

# Keepalive for remote connections: a hung (not dead) daemon is given up on
# after about interval * (count + 1) seconds.
_KEEPALIVE_INTERVAL = 5
_KEEPALIVE_COUNT = 3


class _Disconnected(Exception):
    """A libvirt call failed because the connection is gone."""


def default_pid_dir(uri: str) -> Path | None:
    """Where libvirt's qemu driver keeps ``<name>.pid`` for ``uri``, if local.

    None for other drivers and remote hosts: their pids are unknown (0).
    """
    parts = urlsplit(uri)
    driver, _, transport = parts.scheme.partition("+")
    if driver != "qemu" or parts.hostname or transport not in ("", "unix"):
        return None
    if parts.path == "/system":
        return Path("/run/libvirt/qemu")
    if parts.path == "/session":
        runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
        return Path(runtime) / "libvirt" / "qemu" / "run"
    return None


#: Domains asked one by one (no bulk statistics) before the loop gets a turn.
_FALLBACK_SLICE = 50


def _is_in_process(uri: str) -> bool:
    # The test driver (test:///...) runs inside this process: its calls are
    # quick and must stay on the loop thread, where libvirtaio expects the
    # timers that dispatch its events to be created.  Everything else talks
    # to a daemon and may block.
    return urlsplit(uri).scheme == "test"


def read_pid(pid_dir: Path | None, name: str) -> int:
    """The qemu pid libvirt wrote for domain ``name``, 0 when absent."""
    if pid_dir is None:
        return 0
    try:
        text = (pid_dir / f"{name}.pid").read_text().strip()
        pid = int(text)
    except (OSError, ValueError):
        return 0
    return pid if pid > 0 else 0


class LibvirtHypervisor(HypervisorInterface):
    """Guests and their balloon statistics from one libvirt connection.

    Lifecycle events and a periodic ``resync`` keep the guest list; each
    ``collect`` makes one bulk statistics call (with a per-domain fallback
    for drivers that do not fill the balloon group in bulk).  Losing the
    daemon is survived: ``collect`` returns {}, the listener hears
    ``connection_changed(False)``, and a background task reconnects with
    exponential backoff, then reports ``connection_changed(True)`` and the
    guests that changed meanwhile.
    """

    #: collect makes each sample anew (``fields.copy()``).
    new_samples = True

    def __init__(self, uri: str = "", *, stats_period: int = 5,
                 pid_dir: Path | None = None, reconnect_min: float = 0.5,
                 reconnect_max: float = 30.0, collectors: Iterable[str] = (),
                 collector_options: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.uri = uri
        collectors = list(collectors)
        #: What the configured guest collectors read beyond the balloon.
        self._readers: tuple[DomainReader, ...] = readers_for(collectors, collector_options)
        # MoM's rule where two collectors give the same field: the one listed
        # first wins.  A per-domain reader listed after GuestMemory (the
        # balloon's statistics) only fills what the balloon left out.
        balloon_at = collectors.index("GuestMemory") if "GuestMemory" in collectors \
            else len(collectors)
        self._filling = frozenset(r.collector for r in self._readers
                                  if collectors.index(r.collector) > balloon_at)
        self._stats_groups = libvirt.VIR_DOMAIN_STATS_BALLOON
        for reader in self._readers:
            self._stats_groups |= reader.stats
        self._reads_definition = any(r.from_xml for r in self._readers)
        self._requested_uri = uri
        self._stats_period = stats_period
        self._pid_dir_arg = pid_dir
        self._pid_dir: Path | None = pid_dir
        self._reconnect_min = reconnect_min
        self._reconnect_max = max(reconnect_max, reconnect_min)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: HypervisorListener | None = None
        self._conn: libvirt.virConnect | None = None
        self._lifecycle_id: int | None = None
        self._definition_ids: list[int] = []
        # One thread for every blocking call to a daemon: calls on one
        # connection are serialized by libvirt anyway, and a thread per
        # guest would only pile up behind a hung daemon.
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._offload = not _is_in_process(uri) if uri else True

        self._guests: dict[str, GuestInfo] = {}
        # The running guests' domain objects and ids, kept from when they
        # were added: no listing of every domain each cycle.
        self._domains: dict[str, libvirt.virDomain] = {}
        self._domain_ids: dict[str, int] = {}
        # What the previous collection read of each guest and made of it
        # (see _keep_read): an idle guest's statistics repeat, and its
        # sample is then made of the very same objects, with no work per
        # field.  The read's keys as one tuple for all guests, its values
        # as a tuple: libvirt's dicts, with their own key strings, would
        # cost a kilobyte or more per guest.  On the per-domain path the
        # basis is the guest's maximum memory, read once with info(): then
        # memoryStats() alone makes a sample.
        self._last_read: dict[str, tuple[tuple[str, ...], tuple, Any, dict[str, Any]]] = {}
        self._read_keys: dict[tuple[str, ...], tuple[str, ...]] = {}
        # Distinct definition fields by their items (see _defined).
        self._definitions: dict[tuple, dict[str, Any]] = {}
        # Fields the engine leaves out (``leave_out``), and the tables of
        # what each read keeps, without them.
        self._left_out: frozenset[str] = frozenset()
        self._bulk_fields = tuple(BULK_BALLOON_FIELDS.items())
        self._memory_fields = tuple(MEMORY_STATS_FIELDS.items())
        self._keeps_age = self._keeps_min = self._keeps_cur = self._keeps_max = True
        # Lifecycle events seen per UUID.  An addition or removal computed
        # from an older view (a resync listing, a slow lookup) is dropped
        # when an event for that guest arrived meanwhile: the event is newer.
        self._event_seq: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._uncancellable: set[asyncio.Task[Any]] = set()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._closing = False
        self._ever_connected = False

        # Whether getAllDomainStats fills the balloon group (reset per
        # connection: a reconnect may reach another daemon version).
        self._bulk_balloon = True
        self._fallback_logged = False
        self._period_logged = False

    # -- public API -------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def connection(self) -> libvirt.virConnect | None:
        """The live libvirt connection (for tests: the test driver keeps its
        state per connection, so they must act through this one)."""
        return self._conn

    @property
    def pid_dir(self) -> Path | None:
        """Where qemu pid files are read from (None: pids unknown)."""
        return self._pid_dir

    def guests(self) -> dict[str, GuestInfo]:
        return dict(self._guests)

    def qemu_pids(self) -> list[int]:
        """The known qemu pids of running guests (non-zero only)."""
        return [g.pid for g in self._guests.values() if g.pid]

    def leave_out(self, fields: frozenset[str]) -> bool:
        # Dropped where each sample is made, rather than by copying every
        # sample of every guest afterwards.
        self._left_out = left_out = frozenset(fields)
        self._bulk_fields = tuple((k, f) for k, f in BULK_BALLOON_FIELDS.items()
                                  if f not in left_out)
        self._memory_fields = tuple((k, f) for k, f in MEMORY_STATS_FIELDS.items()
                                    if f not in left_out)
        self._keeps_age = "stats_age" not in left_out
        self._keeps_min = "balloon_min" not in left_out
        self._keeps_cur = "balloon_cur" not in left_out
        self._keeps_max = "balloon_max" not in left_out
        self._last_read.clear()
        self._definitions.clear()
        for info in self._guests.values():
            info.defined = self._defined(info.defined)
        return True

    def _defined(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` read from a guest's definition, as its GuestInfo keeps
        them: without the left-out ones, and one dict for all the guests
        whose definitions say the same (most guests of a host have the same
        balloon features, often the same tunables).  A GuestInfo's
        ``defined`` is replaced, never changed in place, so sharing it is
        safe."""
        fields = self._kept(fields)
        # Numbers of another type are equal (1 == 1.0 == True): the types are
        # part of the key, and only plain values are shared (not the limits
        # of each disk, say).
        if not all(type(v) in _PLAIN for v in fields.values()):
            return fields
        key = tuple((k, type(v), v) for k, v in fields.items())
        shared = self._definitions.get(key)
        if shared is not None:
            return shared
        if len(self._definitions) < _SHARED_READ_KEYS:
            self._definitions[key] = fields
        return fields

    def _kept(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` without the left-out ones (the same dict when none is)."""
        left_out = self._left_out
        if not left_out or left_out.isdisjoint(fields):
            return fields
        return {k: v for k, v in fields.items() if k not in left_out}

    async def start(self, listener: HypervisorListener) -> None:
        self._loop = asyncio.get_running_loop()
        self._listener = listener
        self._closing = False
        # Must precede the first open: libvirt wires a connection to the
        # event loop that is registered when it is opened.
        bind_event_loop(self._loop)
        try:
            await self._connect()
        except libvirt.libvirtError as err:
            log.warning("cannot connect to libvirt at %s: %s; retrying in the background",
                        self._requested_uri or "the default URI", _message(err))
            self._start_reconnect()

    async def close(self) -> None:
        self._closing = True
        tasks = [t for t in (self._reconnect_task, *self._tasks) if t is not None]
        for task in tasks:
            if task not in self._uncancellable:
                task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._reconnect_task = None
        self._tasks.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await self._run(self._teardown_sync, conn, self._lifecycle_id,
                                self._definition_ids)
            except Exception:  # noqa: BLE001 - closing must not fail
                log.debug("error closing the libvirt connection", exc_info=True)
        self._lifecycle_id = None
        self._definition_ids = []
        self._domains.clear()
        self._domain_ids.clear()
        if self._executor is not None:
            # Do not wait: a call stuck on a hung daemon must not hang close().
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        await settle()

    async def resync(self) -> None:
        await self._resync(refresh_pids=False)

    async def _resync(self, *, refresh_pids: bool) -> None:
        conn = self._conn
        if conn is None:
            return
        seen = dict(self._event_seq)
        try:
            if not refresh_pids:
                # The running domains' ids are a few bytes where the full list
                # is an object per domain; when they are the ones known (a
                # restarted guest gets a new id), nothing changed.
                ids = await self._guarded(conn, conn.listDomainsID)
                if (len(self._domain_ids) == len(self._guests)
                        and set(ids) == set(self._domain_ids.values())):
                    return
            domains = await self._guarded(conn, conn.listAllDomains,
                                          libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        except (_Disconnected, libvirt.libvirtError) as err:
            log.debug("resync failed: %s", err)
            return
        current = {dom.UUIDString(): dom for dom in domains}
        for uuid, dom in current.items():
            if uuid in self._guests:
                # After a reconnect the old connection's objects are useless.
                self._remember_domain(uuid, dom)
        for uuid in list(self._guests):
            if uuid not in current and self._event_seq.get(uuid, 0) == seen.get(uuid, 0):
                self._remove_guest(uuid)
        if refresh_pids and self._pid_dir is not None:
            # A guest restarted while we were disconnected keeps its UUID but
            # gets a new qemu process; pid files are cheap to read again.
            for info in self._guests.values():
                info.pid = read_pid(self._pid_dir, info.name)
        new = [dom for uuid, dom in current.items() if uuid not in self._guests]
        if new:
            await self._add_guests(conn, new, {d.UUIDString(): seen.get(d.UUIDString(), 0)
                                               for d in new})

    async def collect(self) -> dict[str, dict[str, Any]]:
        conn = self._conn
        if conn is None:
            return {}
        # Each UUID to the guest's own string: a string libvirt gives for a
        # domain is a new one each call, and the maps kept by UUID
        # (_last_read, ...) should not hold a copy of their own.
        wanted = {uuid: uuid for uuid in self._guests}
        if not wanted:
            return {}
        try:
            raw, fallback, domains = await self._guarded(conn, self._bulk_stats, conn, wanted)
            # One call per domain where bulk statistics are missing: in
            # slices, so that the event loop (and the bus) gets turns when
            # the driver runs inline.
            for start in range(0, len(fallback), _FALLBACK_SLICE):
                raw.update(await self._guarded(
                    conn, self._per_domain_slice, fallback[start:start + _FALLBACK_SLICE]))
                await asyncio.sleep(0)
            if any(r.per_domain for r in self._readers):
                uuids = list(raw)
                for start in range(0, len(uuids), _FALLBACK_SLICE):
                    await self._guarded(conn, self._read_domains, raw,
                                        [(u, domains[u]) for u in uuids[start:start + _FALLBACK_SLICE]])
                    await asyncio.sleep(0)
        except _Disconnected:
            return {}
        except Exception as err:  # noqa: BLE001 - collect never raises
            log.warning("collecting guest statistics failed: %s", err)
            return {}
        now = time.time()
        guests = self._guests
        keeps_age, keeps_min = self._keeps_age, self._keeps_min
        samples: dict[str, dict[str, Any]] = {}
        # The age by time of the balloon's last update: those times are whole
        # seconds and every guest reports on the same period, so a thousand
        # guests share a handful of them, and each sample's stats_age (kept in
        # the engine's history) is one of a handful of floats.
        ages: dict[Any, float] = {}
        for uuid, (fields, last_update) in raw.items():
            info = guests.get(uuid)
            if info is None:  # removed while the call was running
                continue
            # A new dict each time (the engine keeps it); the fields of an
            # unchanged read are the previous sample's objects.
            sample = fields.copy()
            if last_update and keeps_age:
                age = ages.get(last_update)
                if age is None:
                    age = now - last_update     # no max(0.0, float(...)): twice as cheap
                    age = ages[last_update] = age if age > 0.0 else 0.0
                sample["stats_age"] = age
            if keeps_min:
                sample["balloon_min"] = info.balloon_min
            if info.defined:
                sample.update(info.defined)
            samples[uuid] = sample
        return samples

    async def set_balloon_target(self, uuid: str, kib: int) -> None:
        await self._on_domain(uuid, lambda dom: dom.setMemoryFlags(
            int(kib), libvirt.VIR_DOMAIN_AFFECT_LIVE))

    async def set_io_tune(self, uuid: str, device: str, limits: dict[str, int]) -> None:
        await self._on_domain(uuid, lambda dom: set_block_io_tune(dom, device, limits))

    async def set_mem_tune(self, uuid: str, limits: Mapping[str, int]) -> None:
        parameters = memory_parameters(limits)
        try:
            await self._on_domain(uuid, lambda dom: dom.setMemoryParameters(
                parameters, libvirt.VIR_DOMAIN_AFFECT_LIVE))
        finally:
            # No event tells of the new limits (libvirt 9.0), and a refusal may
            # come after part of them was written: read the definition again.
            conn = self._conn
            if conn is not None and self._reads_definition and uuid in self._guests:
                with contextlib.suppress(HypervisorError):
                    dom = await self._on_domain(uuid, lambda dom: dom)
                    await self._refresh_definition(conn, dom, redefined=False)

    async def set_virtio_mem_requested(self, uuid: str, kib: int) -> None:
        try:
            dom = await self._on_domain(uuid, lambda dom: (set_requested(dom, kib), dom)[1])
        except NoVirtioMemDevice as err:
            raise HypervisorUnsupported(str(err)) from err
        # The new <requested> is in the live definition now, but libvirt sends
        # its event only once the guest has plugged or unplugged something.
        conn = self._conn
        if conn is not None and uuid in self._guests:
            self._spawn(self._refresh_definition(conn, dom, redefined=False))

    async def set_cpu_tune(self, uuid: str, *, quota: int | None = None,
                           period: int | None = None) -> None:
        await self._on_domain(uuid, lambda dom: set_cpu_tune(dom, quota, period))
        # Kept at once: the TUNABLE event that re-reads the definition may
        # come after the next evaluation, which must not send them again.
        info = self._guests.get(uuid)
        if info is not None and "vcpu_quota" in info.defined:
            info.defined = self._defined({**info.defined, **{
                k: v for k, v in (("vcpu_quota", quota), ("vcpu_period", period))
                if v is not None}})

    async def _on_domain(self, uuid: str, change: Callable[[libvirt.virDomain], _T]) -> _T:
        """Run ``change`` on the running domain ``uuid``: the one way a
        mechanism's request reaches libvirt.  HypervisorUnsupported when the
        driver or the guest lacks what it asks for, HypervisorError for every
        other refusal."""
        conn = self._conn
        if conn is None:
            raise HypervisorError("not connected to libvirt")
        try:
            return await self._guarded(conn, lambda: change(conn.lookupByUUIDString(uuid)))
        except _Disconnected as err:
            raise HypervisorError(f"libvirt connection lost: {err}") from err
        except libvirt.libvirtError as err:
            if err.get_error_code() in _UNSUPPORTED:
                raise HypervisorUnsupported(_message(err)) from err
            raise HypervisorError(_message(err)) from err

    # -- connecting -------------------------------------------------------

    async def _connect(self) -> None:
        """Open, subscribe, report the running guests; libvirtError on failure."""
        opening = asyncio.ensure_future(self._run(libvirt.open, self._requested_uri or None))
        try:
            # Shielded: if close() cancels us while the (threaded) open is
            # under way, the connection it yields must still be closed.
            conn = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(self._close_orphan)
            raise
        try:
            actual = conn.getURI()
            self._offload = not _is_in_process(actual)
            lifecycle_id = await self._run(self._subscribe_sync, conn)
        except libvirt.libvirtError:
            await self._run(self._teardown_sync, conn, None)
            raise
        try:
            definition_ids = await self._run(self._subscribe_definition_sync, conn)
        except libvirt.libvirtError:
            await self._run(self._teardown_sync, conn, lifecycle_id)
            raise
        if self._closing:
            await self._run(self._teardown_sync, conn, lifecycle_id, definition_ids)
            return
        self.uri = actual
        self._pid_dir = self._pid_dir_arg if self._pid_dir_arg is not None \
            else default_pid_dir(actual)
        self._conn = conn
        self._lifecycle_id = lifecycle_id
        self._definition_ids = definition_ids
        self._bulk_balloon = True
        if self._ever_connected:
            log.info("reconnected to libvirt at %s", actual)
        else:
            log.info("connected to libvirt at %s", actual)
        self._ever_connected = True
        self._notify("connection_changed", True)
        await self._resync(refresh_pids=True)

    def _close_orphan(self, opening: asyncio.Future[libvirt.virConnect]) -> None:
        if not opening.cancelled() and opening.exception() is None:
            self._teardown_sync(opening.result(), None)

    def _subscribe_sync(self, conn: libvirt.virConnect) -> int:
        try:
            conn.registerCloseCallback(self._on_close, None)
        except libvirt.libvirtError:
            pass  # local drivers have no socket to lose
        try:
            conn.setKeepAlive(_KEEPALIVE_INTERVAL, _KEEPALIVE_COUNT)
        except libvirt.libvirtError:
            pass  # local drivers do not support keepalive
        return conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None)

    def _subscribe_definition_sync(self, conn: libvirt.virConnect) -> list[int]:
        """The events after which the readers read a guest's definition again."""
        events = dict.fromkeys(event for reader in self._readers for event in reader.events)
        return [conn.domainEventRegisterAny(None, event, self._on_definition_event, None)
                for event in events]

    @staticmethod
    def _teardown_sync(conn: libvirt.virConnect, lifecycle_id: int | None,
                       definition_ids: Iterable[int] = ()) -> None:
        # Each step may fail on a dead connection; the goal is only to free
        # what can be freed (libvirtaio counts handles left behind).
        for callback_id in (lifecycle_id, *definition_ids):
            if callback_id is None:
                continue
            try:
                conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError:
                pass
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    def _start_reconnect(self) -> None:
        if self._closing or (self._reconnect_task and not self._reconnect_task.done()):
            return
        self._reconnect_task = asyncio.get_running_loop().create_task(
            self._reconnect_loop(), name="libvirt-reconnect")

    async def _reconnect_loop(self) -> None:
        delay = self._reconnect_min
        while not self._closing:
            await asyncio.sleep(delay)
            try:
                await self._connect()
            except libvirt.libvirtError as err:
                # Only the first failure of an outage is worth a warning
                # (already logged); the retries are noise.
                log.debug("reconnecting to libvirt failed: %s", _message(err))
                delay = min(delay * 2, self._reconnect_max)
                continue
            return

    def _connection_lost(self, conn: libvirt.virConnect, why: str) -> None:
        """Forget a broken connection (once) and start reconnecting."""
        if conn is not self._conn or self._closing:
            return  # an old connection, or already handled
        self._conn = None
        lifecycle_id, self._lifecycle_id = self._lifecycle_id, None
        definition_ids, self._definition_ids = self._definition_ids, []
        # Its domain objects would keep the dead connection open; the resync
        # after reconnecting looks them up again.
        self._domains.clear()
        self._domain_ids.clear()
        log.warning("lost the libvirt connection to %s (%s); reconnecting", self.uri, why)
        # Not cancelled by close(): a broken connection must still be freed.
        self._spawn(self._run(self._teardown_sync, conn, lifecycle_id, definition_ids),
                    cancellable=False)
        self._notify("connection_changed", False)
        self._start_reconnect()

    # -- events (called by libvirt on the loop thread, via libvirtaio) -----

    def _on_close(self, conn: libvirt.virConnect, reason: int, opaque: object) -> None:
        why = _CLOSE_REASONS.get(reason, f"reason {reason}")
        # Deferred, not handled inside libvirt's callback: tearing the
        # connection down there would re-enter the code that is calling us.
        # libvirt may call this from the libvirt thread (the one that found
        # the socket closed), hence the thread-safe hand-over.
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._connection_lost, conn, why)

    def _on_lifecycle(self, conn: libvirt.virConnect, dom: libvirt.virDomain,
                      event: int, detail: int, opaque: object) -> None:
        if conn is not self._conn:
            return
        uuid = dom.UUIDString()
        seq = self._event_seq.get(uuid, 0) + 1
        self._event_seq[uuid] = seq
        if event in _ADDING_EVENTS:
            if uuid not in self._guests:
                self._spawn(self._add_guests(conn, [dom], {uuid: seq}))
        elif event in _REMOVING_EVENTS:
            self._remove_guest(uuid)
        elif event == libvirt.VIR_DOMAIN_EVENT_DEFINED and uuid in self._guests:
            self._spawn(self._refresh_definition(conn, dom, redefined=True))

    def _on_definition_event(self, conn: libvirt.virConnect, dom: libvirt.virDomain,
                             *details: object) -> None:
        # Metadata, devices, memory device sizes: each event has its own
        # arguments, and all mean the same here: read the definition again.
        if conn is self._conn and dom.UUIDString() in self._guests:
            self._spawn(self._refresh_definition(conn, dom, redefined=False))

    # -- guests -----------------------------------------------------------

    async def _add_guests(self, conn: libvirt.virConnect, domains: list[libvirt.virDomain],
                          expected: dict[str, int]) -> None:
        try:
            infos = await self._guarded(conn, self._describe_sync, domains)
        except (_Disconnected, libvirt.libvirtError) as err:
            log.debug("describing new guests failed: %s", err)
            return
        by_uuid = {dom.UUIDString(): dom for dom in domains}
        for info in infos:
            if self._conn is not conn or info.uuid in self._guests:
                continue
            if self._event_seq.get(info.uuid, 0) != expected.get(info.uuid, 0):
                continue  # a later lifecycle event decides about this guest
            self._guests[info.uuid] = info
            self._remember_domain(info.uuid, by_uuid[info.uuid])
            self._notify("guest_added", info)

    def _remember_domain(self, uuid: str, dom: libvirt.virDomain) -> None:
        self._domains[uuid] = dom
        self._domain_ids[uuid] = dom.ID()

    def _remove_guest(self, uuid: str) -> None:
        self._domains.pop(uuid, None)
        self._last_read.pop(uuid, None)
        self._domain_ids.pop(uuid, None)
        if self._guests.pop(uuid, None) is not None:
            self._notify("guest_removed", uuid)

    async def _refresh_definition(self, conn: libvirt.virConnect, dom: libvirt.virDomain,
                                  *, redefined: bool) -> None:
        """Read again what the guest's definition says: its guarantee after a
        redefinition, and the readers' fields."""
        try:
            inactive = (await self._guarded(conn, dom.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE)
                        if redefined else None)
            live = (await self._guarded(conn, dom.XMLDesc, 0)
                    if self._reads_definition else None)
        except (_Disconnected, libvirt.libvirtError):
            return
        info = self._guests.get(dom.UUIDString())
        if info is None:
            return
        # Updated in place: the engine holds this very object, and the
        # next samples carry the new values anyway.
        if inactive is not None:
            info.balloon_min = min_guarantee_kib(inactive)
            self._last_read.pop(info.uuid, None)   # the next sample reads the maximum again
        if live is not None:
            info.defined = self._defined(definition_fields(self._readers, live))
            self._notify("guest_changed", info)

    def _describe_sync(self, domains: Iterable[libvirt.virDomain]) -> list[GuestInfo]:
        """GuestInfo for each domain still running; sets its stats period."""
        infos = []
        for dom in domains:
            try:
                # The inactive (persistent) definition is what a "define"
                # changes; for a transient domain it is the live one.
                xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            except libvirt.libvirtError as err:
                if err.get_error_code() in _DOMAIN_GONE:
                    continue
                raise
            self._set_stats_period(dom)
            name = dom.name()
            infos.append(GuestInfo(uuid=dom.UUIDString(), name=name,
                                   pid=read_pid(self._pid_dir, name),
                                   balloon_min=min_guarantee_kib(xml),
                                   defined=self._defined(self._definition_sync(dom))))
        return infos

    def _definition_sync(self, dom: libvirt.virDomain) -> dict[str, Any]:
        """The readers' fields from the domain's live definition ({} when none reads it)."""
        if not self._reads_definition:
            return {}
        try:
            return definition_fields(self._readers, dom.XMLDesc(0))
        except libvirt.libvirtError as err:
            if err.get_error_code() in _DOMAIN_GONE:
                return {}
            raise

    def _set_stats_period(self, dom: libvirt.virDomain) -> None:
        if self._stats_period <= 0:
            return
        try:
            dom.setMemoryStatsPeriod(self._stats_period, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as err:
            if _connection_broken(dom.connect(), err):
                raise
            # Drivers without balloon statistics, guests without a balloon:
            # the guest is still managed, with the statistics there are.
            if not self._period_logged:
                self._period_logged = True
                log.warning("cannot set the memory statistics period of %s: %s "
                            "(not logged again for other guests)", dom.name(), _message(err),
                            extra=guest_fields(dom.UUIDString(), dom.name()))

    # -- statistics -------------------------------------------------------
    #
    # Each read gives (fields, last_update) per guest: the balloon's and the
    # readers' fields, and when the balloon driver last reported (the
    # sample's stats_age is computed from it once all are read).

    def _read_again(self, uuid: str, stats: dict[str, Any], basis: Any
                    ) -> dict[str, Any] | None:
        """The fields made of the previous read of ``uuid`` if it read the
        same ``stats`` with the same ``basis`` (what else they were made
        from), else None."""
        previous = self._last_read.get(uuid)
        if (previous is not None and previous[2] == basis
                and previous[1] == tuple(stats.values()) and previous[0] == tuple(stats)):
            return previous[3]
        return None

    def _keep_read(self, uuid: str, stats: dict[str, Any], basis: Any,
                   fields: dict[str, Any]) -> dict[str, Any]:
        """``fields``, just made of ``stats`` and ``basis``, kept for the next
        read, each value equal to the previous read's replaced by that
        object: so the engine's history shares it too."""
        keys = tuple(stats)
        shared = self._read_keys.get(keys)
        if shared is None and len(self._read_keys) < _SHARED_READ_KEYS:
            shared = self._read_keys[keys] = keys
        keys = keys if shared is None else shared
        values = tuple(stats.values())
        previous = self._last_read.get(uuid)
        if previous is not None:
            old = previous[3]
            for key, value in fields.items():
                was = old.get(key, _ABSENT)
                if type(was) is type(value) and was == value:
                    fields[key] = was
            if previous[0] == keys:
                values = tuple(o if type(o) is type(n) and o == n else n
                               for o, n in zip(previous[1], values))
        self._last_read[uuid] = (keys, values, basis, fields)
        return fields

    def _bulk_stats(self, conn: libvirt.virConnect, wanted: dict[str, str]
                    ) -> tuple[dict[str, tuple[dict[str, Any], Any]],
                               list[tuple[str, libvirt.virDomain]],
                               dict[str, libvirt.virDomain]]:
        """Reads from one bulk call, the domains it left without balloon
        stats, and every wanted domain by UUID."""
        samples: dict[str, tuple[dict[str, Any], Any]] = {}
        fallback: list[tuple[str, libvirt.virDomain]] = []
        domains: dict[str, libvirt.virDomain] = {}
        if self._bulk_balloon:
            try:
                records = conn.getAllDomainStats(
                    self._stats_groups,
                    flags=libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)
            except libvirt.libvirtError as err:
                if err.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                    raise
                records = None
            if records is None:
                self._bulk_balloon = False
            else:
                for dom, stats in records:
                    uuid = wanted.get(dom.UUIDString())
                    if uuid is None:
                        continue
                    domains[uuid] = dom
                    if "balloon.current" in stats:
                        fields = self._read_again(uuid, stats, None)
                        if fields is None:
                            fields = self._keep_read(uuid, stats, None, self._from_bulk(stats))
                        samples[uuid] = (fields, stats.get(_BULK_LAST_UPDATE))
                    else:
                        fallback.append((uuid, dom))
                if fallback and not samples:
                    # Nothing came back in bulk: this driver does not fill
                    # the balloon group, stop asking it.
                    self._bulk_balloon = False
        if not self._bulk_balloon and not fallback:
            domains.update((uuid, dom) for uuid, dom in self._domains.items() if uuid in wanted)
            fallback = list(domains.items())
        if fallback and not self._fallback_logged:
            self._fallback_logged = True
            log.info("libvirt at %s does not report balloon statistics in bulk; "
                     "asking each domain (info, memoryStats) instead", self.uri)
        return samples, fallback, domains

    def _from_bulk(self, stats: dict[str, Any]) -> dict[str, Any]:
        fields = {field: stats[key] for key, field in self._bulk_fields if key in stats}
        for reader in self._readers:
            if reader.from_stats is not None:
                fields.update(self._kept(reader.from_stats(stats)))
        return fields

    def _read_domains(self, raw: dict[str, tuple[dict[str, Any], Any]],
                      domains: list[tuple[str, libvirt.virDomain]]) -> None:
        """Add the per-domain readers' fields to the reads of ``domains``."""
        for uuid, dom in domains:
            fields, last_update = raw[uuid]
            sample = dict(fields)   # not the kept read's own dict
            try:
                for reader in self._readers:
                    if reader.per_domain is not None:
                        read = self._kept(reader.per_domain(dom))
                        filling = reader.collector in self._filling
                        # When a reader read its figures (the agent's), as a
                        # field: the sample's age if the balloon gave none (0),
                        # or if the reader's figures replace the balloon's.
                        update = read.get(READ_TIME_FIELD)
                        if update is not None:
                            if not last_update or not filling:
                                last_update = update
                            read = {k: v for k, v in read.items() if k != READ_TIME_FIELD}
                        if filling:
                            read = {k: v for k, v in read.items() if sample.get(k) is None}
                        sample.update(read)
            except libvirt.libvirtError as err:
                if err.get_error_code() not in _DOMAIN_GONE:
                    raise
            raw[uuid] = (sample, last_update)

    def _per_domain_slice(self, domains: list[tuple[str, libvirt.virDomain]]
                          ) -> dict[str, tuple[dict[str, Any], Any]]:
        samples = {}
        last_read = self._last_read
        for uuid, dom in domains:
            try:
                stats = dom.memoryStats()
            except libvirt.libvirtError as err:
                if err.get_error_code() in _DOMAIN_GONE:
                    continue
                if err.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                    raise
                stats = {}
            previous = last_read.get(uuid)
            max_kib = previous[2] if previous is not None else None
            # _read_again, inline (every guest, every collection).  Without
            # "actual", the balloon's size comes from info(): nothing is reused.
            if (max_kib is not None
                    and previous[1] == tuple(stats.values()) and previous[0] == tuple(stats)
                    and "actual" in stats):
                fields = previous[3]
            else:
                made = self._per_domain_fields(dom, stats, max_kib)
                if made is None:
                    continue
                fields, read_max = made
                # Fixed while the guest runs (a redefinition forgets it).
                fields = self._keep_read(uuid, stats,
                                         read_max if max_kib is None else max_kib, fields)
            samples[uuid] = (fields, stats.get(_STATS_LAST_UPDATE))
        return samples

    def _per_domain_fields(self, dom: libvirt.virDomain, stats: dict[str, Any],
                           max_kib: int | None) -> tuple[dict[str, Any], int] | None:
        """One domain's balloon fields from its ``stats`` (memoryStats), and
        its maximum memory: the balloon's size is "actual" when the maximum
        is known from when the guest was added, else info() is asked for both."""
        if max_kib is not None and "actual" in stats:
            cur_kib = stats["actual"]
        else:
            try:
                _state, max_kib, cur_kib, _vcpus, _cpu = dom.info()
            except libvirt.libvirtError as err:
                if err.get_error_code() in _DOMAIN_GONE:
                    return None
                raise
        fields: dict[str, Any] = {}
        if self._keeps_cur:
            fields["balloon_cur"] = cur_kib
        if self._keeps_max:
            fields["balloon_max"] = max_kib
        for key, field in self._memory_fields:
            if key in stats:
                fields[field] = stats[key]
        return fields, max_kib

    # -- running calls ----------------------------------------------------

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Call ``fn`` inline (in-process driver) or on the libvirt thread."""
        if not self._offload:
            return fn(*args)
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="libvirt")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _guarded(self, conn: libvirt.virConnect, fn: Callable[..., _T], *args: Any) -> _T:
        """``_run`` that turns a broken connection into ``_Disconnected``."""

        def call() -> _T:
            try:
                return fn(*args)
            except libvirt.libvirtError as err:
                # Checked on the calling thread: isAlive() takes the
                # connection's lock, which may be held by a stuck call.
                if _connection_broken(conn, err):
                    raise _Disconnected(_message(err)) from err
                raise

        try:
            return await self._run(call)
        except _Disconnected as err:
            self._connection_lost(conn, str(err))
            raise

    def _spawn(self, coro: Any, *, cancellable: bool = True) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        if not cancellable:
            self._uncancellable.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._uncancellable.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("libvirt background task failed", exc_info=task.exception())


def _message(err: libvirt.libvirtError) -> str:
    return err.get_error_message() or str(err)


def _connection_broken(conn: libvirt.virConnect, err: libvirt.libvirtError) -> bool:
    """Whether ``err`` means the connection is unusable (not just the call)."""
    code = err.get_error_code()
    if code in _DISCONNECTED:
        return True
    try:
        if not conn.isAlive():
            return True
    except libvirt.libvirtError:
        return True
    message = _message(err).lower()
    return code in _MAYBE_DISCONNECTED and any(m in message for m in _DISCONNECT_MESSAGES)
