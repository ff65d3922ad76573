"""What each guest collector needs from libvirt beyond the balloon: one reader each.

The balloon statistics come from one bulk call for every guest
(``libvirt.py``).  A guest collector that needs more (CPU tuning, block
I/O tuning, memory devices, ...) describes here where its fields come
from, cheapest first:

- ``stats``: bulk statistics groups added to that same one call, read
  from each domain's record by ``from_stats``;
- ``from_xml``: the domain's live definition (devices, metadata), read
  when the guest appears and again after one of ``events`` (and after a
  redefinition), kept on the guest in between;
- ``per_domain``: calls of its own on each domain at each collection, for
  what neither carries (libvirt has no bulk call for it).

A reader with options or state of its own (``bind``) is made afresh for
each hypervisor connection from its collector's ``[Collector: NAME]``
options.

Readers only read: nothing here changes a domain.  Each is registered in
``READERS`` under its collector's name, and the hypervisor runs those of
the configured collectors only, so a host that does not ask for a
mechanism's statistics pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Callable

import libvirt

from . import libvirt_cputune
from . import libvirt_virtio_mem as _virtio_mem
from .libvirt_balloon_features import balloon_features
from . import libvirt_iotune
from .libvirt_memtune import memtune_fields

Fields = dict[str, Any]


@dataclass(frozen=True)
class DomainReader:
    """Where one guest collector's fields come from in libvirt (see the module)."""

    collector: str
    stats: int = 0
    from_stats: Callable[[Mapping[str, Any]], Fields] | None = None
    from_xml: Callable[[str], Fields] | None = None
    events: tuple[int, ...] = ()
    per_domain: Callable[[libvirt.virDomain], Fields] | None = None
    #: Makes the reader to use from the collector's options (None: this one).
    bind: Callable[[Mapping[str, str]], DomainReader] | None = None


def _guest_agent(options: Mapping[str, str]) -> DomainReader:
    # Imported here: its threads and sockets only where it is configured.
    from .libvirt_agent import AgentOptions, QemuAgentReader
    reader = QemuAgentReader(AgentOptions.from_config(options))
    return DomainReader("GuestQemuAgent", from_xml=reader.definition,
                        per_domain=reader.collect, events=_AGENT_EVENTS)


_AGENT_EVENTS = (libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE,)

#: Readers by guest collector name; the collectors not listed need nothing
#: beyond the balloon statistics.
READERS: dict[str, DomainReader] = {reader.collector: reader for reader in (
    DomainReader("GuestBalloon", from_xml=balloon_features),
    DomainReader("GuestQemuAgent", bind=_guest_agent, events=_AGENT_EVENTS),
    # MoM's two names, the same fields: optional for both in mom (nil without limits).
    *(DomainReader(name, from_xml=libvirt_iotune.read_io_tune, events=libvirt_iotune.EVENTS)
      for name in ("GuestIoTune", "GuestIoTuneOptional")),
    # The live <memtune> limits.  libvirt 9.0 sends no event when they change
    # (set_mem_tune reads the definition again itself); TUNABLE is what a
    # later libvirt would send, and costs nothing until then.
    DomainReader("GuestMemTune", from_xml=memtune_fields,
                 events=(libvirt.VIR_DOMAIN_EVENT_ID_TUNABLE,)),
    DomainReader(_virtio_mem.COLLECTOR, from_xml=_virtio_mem.virtio_mem_fields,
                 events=_virtio_mem.EVENTS),
    DomainReader("GuestCpuTune", from_xml=libvirt_cputune.cputune_fields,
                 events=libvirt_cputune.EVENTS),
)}


def readers_for(collectors: Iterable[str],
                options: Mapping[str, Mapping[str, str]] | None = None
                ) -> tuple[DomainReader, ...]:
    """The readers of the named collectors, in the order named, bound to
    their ``[Collector: NAME]`` ``options`` where they take any."""
    readers = []
    for name in dict.fromkeys(collectors):
        reader = READERS.get(name)
        if reader is not None and reader.bind is not None:
            reader = reader.bind((options or {}).get(name, {}))
        if reader is not None:
            readers.append(reader)
    return tuple(readers)


def definition_fields(readers: Iterable[DomainReader], domain_xml: str) -> Fields:
    """What the readers find in a domain's live definition."""
    fields: Fields = {}
    for reader in readers:
        if reader.from_xml is not None:
            fields.update(reader.from_xml(domain_xml))
    return fields
