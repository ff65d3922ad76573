"""The GuestQemuAgent reader: a guest's /proc files through its QEMU guest agent.

Where the agent is reached:

- through libvirt (``libvirt_qemu.qemuAgentCommand``), for a guest whose
  definition has the agent's channel (``org.qemu.guest_agent.0``); the
  channel's state in the live definition (``connected``/``disconnected``)
  says whether the agent runs, and the agent-lifecycle event has the
  definition read again when that changes, so a guest without a running
  agent costs no call at all;
- otherwise, as MoM did for guests libvirt has no agent channel for, on a
  UNIX socket of the host: ``socket_path``/``socket_name_template``
  (``[Collector: GuestQemuAgent]``, MoM's defaults ``/var/lib/libvirt/qemu``
  and ``%(name)s.agent``), when that socket exists.

The files are read with ``guest-file-open``/``-read``/``-close``.  The
agent is a per-guest conversation of several round trips, and an agent may
hang: each guest's read runs on a small pool of worker threads of its own,
never on the hypervisor's libvirt thread, bounded by ``timeout`` seconds
for the whole read.  ``per_domain`` only hands back the figures of the
last read that finished (with their age) and starts the next one, so the
collection of the other guests never waits for an agent.  A guest whose
read failed gets no agent figures until a later read succeeds; reads are
retried with a backoff (1 s doubling to 60 s), and each guest's failure is
logged once until it recovers.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import libvirt
import libvirt_qemu

from ..collectors.errors import CollectionError
from ..collectors.guest_agent import agent_fields
from ..journal_fields import guest_fields
from .base import READ_TIME_FIELD

log = logging.getLogger(__name__)

Fields = dict[str, Any]

#: The virtio-serial port name the agent listens on; libvirt talks to it.
AGENT_CHANNEL = "org.qemu.guest_agent.0"
DEFAULT_TIMEOUT = 2.0
DEFAULT_SOCKET_PATH = Path("/var/lib/libvirt/qemu")
DEFAULT_SOCKET_NAME_TEMPLATE = "%(name)s.agent"
#: Reads running at once, at most (each bounded by the timeout).
WORKERS = 4
#: A file the agent hands back bigger than this is not /proc/meminfo.
MAX_FILE_BYTES = 1 << 20
_READ_CHUNK = 65536
_RETRY_MIN = 1.0
_RETRY_MAX = 60.0
# Guests not asked about for this long are forgotten (they went away).
_FORGET_AFTER = 600.0


class AgentError(Exception):
    """The agent could not be asked, did not answer in time, or refused."""


@dataclass(frozen=True)
class AgentOptions:
    """``[Collector: GuestQemuAgent]``: MoM's two keys and our ``timeout``."""

    timeout: float = DEFAULT_TIMEOUT
    socket_path: Path = DEFAULT_SOCKET_PATH
    socket_name_template: str = DEFAULT_SOCKET_NAME_TEMPLATE

    @classmethod
    def from_config(cls, options: Mapping[str, str]) -> AgentOptions:
        """The options as written (strings, validated by the configuration loader)."""
        values: dict[str, Any] = {}
        if options.get("timeout", "").strip():
            values["timeout"] = float(options["timeout"])
        if options.get("socket_path", "").strip():
            values["socket_path"] = Path(options["socket_path"].strip())
        if "socket_name_template" in options:
            values["socket_name_template"] = options["socket_name_template"].strip()
        return cls(**values)

    def socket_for(self, name: str) -> Path:
        """The host socket MoM would use for guest ``name``."""
        try:
            return self.socket_path / (self.socket_name_template % {"name": name})
        except (KeyError, ValueError, TypeError):
            # MoM's fallback for a template naming anything but the guest.
            return self.socket_path / f"{name}.agent"


def socket_template_error(template: str) -> str | None:
    """Why ``template`` cannot name a guest's socket, or None."""
    try:
        template % {"name": "guest"}
    except (KeyError, ValueError, TypeError) as err:
        return f"{type(err).__name__}: {err}"
    return None


# -- talking to an agent ---------------------------------------------------------


class _LibvirtChannel:
    """Commands through libvirt, which owns the agent's channel."""

    def __init__(self, dom: libvirt.virDomain) -> None:
        self.dom = dom

    def execute(self, command: str, arguments: dict[str, Any], deadline: float) -> Any:
        request = json.dumps({"execute": command, "arguments": arguments})
        # libvirt's timeout is whole seconds, at least 1.
        seconds = max(1, int(deadline - time.monotonic() + 0.999))
        try:
            reply = libvirt_qemu.qemuAgentCommand(self.dom, request, seconds, 0)
        except libvirt.libvirtError as err:
            raise AgentError(err.get_error_message() or str(err)) from None
        return _result(reply)

    def close(self) -> None:
        pass


class _SocketChannel:
    """Commands on a host UNIX socket wired to the agent's port (MoM's way
    for guests whose agent channel libvirt does not own)."""

    def __init__(self, path: Path, deadline: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.buffer = b""
        try:
            self._settimeout(deadline)
            self.sock.connect(str(path))
            # Whatever an earlier client left unread is skipped: the agent
            # answers guest-sync-delimited with 0xFF before its reply.
            token = int(time.monotonic() * 1000) % 2_000_000_000
            self._send("guest-sync-delimited", {"id": token}, deadline)
            self._skip_to_delimiter(deadline)
            while self._reply(deadline) != token:
                pass
        except OSError as err:
            self.close()
            raise AgentError(f"{path}: {err}") from None
        except AgentError:
            self.close()
            raise

    def _settimeout(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AgentError("the agent did not answer in time")
        self.sock.settimeout(remaining)

    def _send(self, command: str, arguments: dict[str, Any], deadline: float) -> None:
        self._settimeout(deadline)
        self.sock.sendall(json.dumps({"execute": command, "arguments": arguments}).encode())

    def _more(self, deadline: float) -> None:
        self._settimeout(deadline)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise AgentError("the agent did not answer in time") from None
        if not data:
            raise AgentError("the agent closed the connection")
        self.buffer += data

    def _skip_to_delimiter(self, deadline: float) -> None:
        while b"\xff" not in self.buffer:
            self.buffer = b""
            self._more(deadline)
        self.buffer = self.buffer[self.buffer.index(b"\xff") + 1:]

    def _reply(self, deadline: float) -> Any:
        while b"\n" not in self.buffer:
            if len(self.buffer) > 4 * MAX_FILE_BYTES:
                raise AgentError("the agent's reply is too long")
            self._more(deadline)
        line, _, self.buffer = self.buffer.partition(b"\n")
        return _result(line.decode("utf-8", "replace"))

    def execute(self, command: str, arguments: dict[str, Any], deadline: float) -> Any:
        try:
            self._send(command, arguments, deadline)
            return self._reply(deadline)
        except OSError as err:
            raise AgentError(str(err)) from None

    def close(self) -> None:
        self.sock.close()


def _result(reply: str) -> Any:
    try:
        message = json.loads(reply)
    except ValueError:
        raise AgentError(f"the agent's reply is not JSON: {reply[:80]!r}") from None
    if not isinstance(message, dict):
        raise AgentError(f"unexpected reply from the agent: {reply[:80]!r}")
    if "error" in message:
        error = message["error"] if isinstance(message["error"], dict) else {}
        raise AgentError(f"the agent refused: {error.get('class', '?')}: "
                         f"{error.get('desc', '')}".rstrip(": "))
    if "return" not in message:
        raise AgentError(f"unexpected reply from the agent: {reply[:80]!r}")
    return message["return"]


def read_guest_file(channel: Any, path: str, deadline: float) -> str:
    """The whole of the guest's file ``path``, through ``channel``."""
    handle = channel.execute("guest-file-open", {"path": path, "mode": "r"}, deadline)
    data = b""
    try:
        while True:
            chunk = channel.execute("guest-file-read",
                                    {"handle": handle, "count": _READ_CHUNK}, deadline)
            try:
                data += base64.b64decode(chunk.get("buf-b64", ""))
            except (ValueError, AttributeError):
                raise AgentError(f"garbled contents of {path}") from None
            if len(data) > MAX_FILE_BYTES:
                raise AgentError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
            if chunk.get("eof") or not chunk.get("count"):
                return data.decode("utf-8", "replace")
    finally:
        # Closed even after a timeout (one more second at most), so that
        # a slow guest's agent is not left with open handles.
        try:
            channel.execute("guest-file-close", {"handle": handle},
                            max(deadline, time.monotonic() + 1))
        except AgentError:
            pass


# -- the reader ----------------------------------------------------------------------


@dataclass
class _Guest:
    """What the reader knows about one guest's agent."""

    name: str = ""
    #: From the live definition: None unknown, False no agent channel.
    channel: bool | None = None
    #: The channel's state: None unknown (older libvirt), else connected or not.
    connected: bool | None = None
    fields: Fields = field(default_factory=dict)
    pending: bool = False
    failures: int = 0
    retry_at: float = 0.0
    failing: bool = False
    seen: float = 0.0


class _Workers:
    """A few daemon threads running queued reads; they end when idle, so
    an unused reader (a test's, an old connection's) keeps no thread."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.running = 0

    def submit(self, job: Callable[[], None]) -> None:
        self.queue.put(job)
        with self.lock:
            if self.running < self.count:
                self.running += 1
                threading.Thread(target=self._work, name="qemu-agent", daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                job = self.queue.get(timeout=30)
            except queue.Empty:
                with self.lock:
                    # Re-checked under the lock: a job queued meanwhile
                    # must not be left without a worker.
                    if self.queue.empty():
                        self.running -= 1
                        return
                continue
            try:
                job()
            except Exception:  # noqa: BLE001 - a worker outlives a bad job
                log.exception("guest agent read failed unexpectedly")


class QemuAgentReader:
    """GuestQemuAgent's reader state for one hypervisor connection (see the module)."""

    def __init__(self, options: AgentOptions, *, workers: int = WORKERS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.clock = clock
        self._guests: dict[str, _Guest] = {}
        self._lock = threading.Lock()
        self._workers = _Workers(workers)
        self._pruned = clock()

    # -- from the live definition (libvirt_readers.from_xml) --

    def definition(self, domain_xml: str) -> Fields:
        """Note whether the guest has the agent's channel and if it is connected."""
        try:
            root = ET.fromstring(domain_xml)
        except ET.ParseError:
            return {}
        uuid = (root.findtext("uuid") or "").strip()
        if not uuid:
            return {}
        channel, connected = False, None
        for target in root.findall("./devices/channel/target"):
            if target.get("type") == "virtio" and target.get("name") == AGENT_CHANNEL:
                channel = True
                state = target.get("state")
                connected = None if state is None else state == "connected"
        with self._lock:
            guest = self._guests.setdefault(uuid, _Guest())
            guest.name = (root.findtext("name") or "").strip()
            guest.channel, guest.connected = channel, connected
            if connected:
                # The agent (re)started: ask at once, not after a backoff.
                guest.retry_at = 0.0
            elif connected is False:
                # It stopped: its last figures are not the guest's any more.
                guest.fields = {}
        return {}

    # -- at each collection (libvirt_readers.per_domain) --

    def collect(self, dom: libvirt.virDomain) -> Fields:
        """The last figures read from the guest's agent, and the next read started."""
        uuid = dom.UUIDString()
        now = self.clock()
        with self._lock:
            guest = self._guests.setdefault(uuid, _Guest())
            guest.seen = now
            if not guest.name:
                guest.name = dom.name()
            self._prune(now)
            fields = dict(guest.fields)
            start = not guest.pending and now >= guest.retry_at and self._reachable(guest)
            if start:
                guest.pending = True
        if start:
            self._workers.submit(lambda: self._read(uuid, guest, dom))
        return fields

    def _reachable(self, guest: _Guest) -> bool:
        if guest.channel is not False:
            return guest.connected is not False
        return self.options.socket_for(guest.name).exists()

    def _prune(self, now: float) -> None:
        if now - self._pruned < 60:
            return
        self._pruned = now
        for uuid in [u for u, g in self._guests.items() if now - g.seen > _FORGET_AFTER]:
            del self._guests[uuid]

    def _read(self, uuid: str, guest: _Guest, dom: libvirt.virDomain) -> None:
        """On a worker: read both files, keep the figures or the failure."""
        deadline = time.monotonic() + self.options.timeout
        try:
            channel: Any = (_LibvirtChannel(dom) if guest.channel is not False
                            else _SocketChannel(self.options.socket_for(guest.name), deadline))
            try:
                meminfo = read_guest_file(channel, "/proc/meminfo", deadline)
                vmstat = read_guest_file(channel, "/proc/vmstat", deadline)
            finally:
                channel.close()
            fields = agent_fields(meminfo, vmstat)
        except (AgentError, CollectionError) as err:
            self._failed(uuid, guest, err)
            return
        except Exception as err:  # noqa: BLE001 - a bug must not leave the guest pending
            log.exception("reading the guest agent of %s failed unexpectedly", guest.name)
            self._failed(uuid, guest, err)
            return
        fields[READ_TIME_FIELD] = time.time()
        with self._lock:
            guest.fields = fields
            guest.pending = False
            guest.failures = 0
            recovered, guest.failing = guest.failing, False
        if recovered:
            log.info("guest agent of %s answers again", guest.name,
                     extra=guest_fields(uuid, guest.name))

    def _failed(self, uuid: str, guest: _Guest, err: Exception) -> None:
        with self._lock:
            guest.fields = {}
            guest.pending = False
            guest.failures += 1
            guest.retry_at = self.clock() + min(_RETRY_MAX,
                                                _RETRY_MIN * 2 ** (guest.failures - 1))
            first, guest.failing = not guest.failing, True
        if first:
            log.warning("cannot read the memory of %s through its guest agent: %s "
                        "(retrying; not logged again until it answers)", guest.name, err,
                        extra=guest_fields(uuid, guest.name))
