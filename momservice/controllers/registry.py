"""The mechanisms momd knows, registered here and nowhere else.

Adding a mechanism: write its module (a :class:`~.base.Mechanism`), add
its class to ``_REGISTERED`` below, and its tests.  Its name becomes valid
in the ``controllers`` configuration key, the engine applies its controls
when it is configured, and the lab runs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from .balloon import BalloonController
from .base import Mechanism, MechanismContext
from .cputune import CpuTuneController
from .iotune import IoTuneController
from .ksm import KsmController
from .memtune import MemTuneController
from .virtio_mem import VirtioMemController

_REGISTERED: tuple[type[Mechanism], ...] = (
    BalloonController,
    KsmController,
    CpuTuneController,
    IoTuneController,
    MemTuneController,
    VirtioMemController,
)

#: Every mechanism by MoM's name, in the order the engine applies them.
MECHANISMS: dict[str, type[Mechanism]] = {kind.name: kind for kind in _REGISTERED}

#: The controls some mechanism consumes, per kind of entity ("host", "guest"):
#: a policy asking for another one is told that nothing handles it.
CONTROLS: dict[str, frozenset[str]] = {
    entity: frozenset().union(*(k.controls for k in _REGISTERED if k.entity == entity))
    for entity in ("host", "guest")}


class Mechanisms(Mapping[str, Mechanism]):
    """The mechanisms of one momd (or one lab run), each built once, by name;
    ``enabled`` are those the configuration lets the policies drive.

    Requests by hand (``SetBalloonTarget``, ``SetKsm``) use the same
    objects, configured or not, as they always could.
    """

    def __init__(self, built: Iterable[Mechanism], enabled: Iterable[str]) -> None:
        self._by_name = {mechanism.name: mechanism for mechanism in built}
        wanted = set(enabled)
        self.enabled: tuple[Mechanism, ...] = tuple(
            m for name, m in self._by_name.items() if name in wanted)

    def __getitem__(self, name: str) -> Mechanism:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)


def build_mechanisms(context: MechanismContext, enabled: Iterable[str]) -> Mechanisms:
    """Every registered mechanism built for ``context``; ``enabled`` names the
    configured ones (names not registered are left out: the configuration
    has said so already)."""
    return Mechanisms((kind.build(context) for kind in MECHANISMS.values()), enabled)
