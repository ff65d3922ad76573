"""What a mechanism is: the one small interface every controller implements.

A mechanism is a way of acting on the host or its guests (balloons, KSM,
...).  It has MoM's name, as the ``controllers`` configuration key spells
it; it consumes some of the controls a policy sets (``balloon_target`` on a
guest, ``ksm_run`` on the host, ...), knows how to check a value of one,
and acts on a whole decision, returning what it did: the evaluation keeps
that report under the mechanism's name.  Mechanisms are registered in
:mod:`momservice.controllers.registry`, the only list of them.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from ..hypervisor.base import HypervisorInterface


@dataclass(frozen=True)
class MechanismContext:
    """Where a mechanism acts, and the settings of momd that concern mechanisms.

    ``ksm_dir`` is the KSM directory of the host momd manages (the real
    sysfs, a test's tree or the simulator's).
    """

    hypervisor: HypervisorInterface
    ksm_dir: Path
    dry_run: bool = False
    balloon_floor_kib: int | None = None   # None: the Balloon mechanism's default


@dataclass
class Decision:
    """What one evaluation of the policies decided, with what a mechanism needs
    to act on it: the newest guest samples and the guests' names."""

    host_controls: Mapping[str, Any] = field(default_factory=dict)
    guest_controls: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # by UUID
    guest_samples: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)   # by UUID
    guest_names: Mapping[str, str] = field(default_factory=dict)                   # by UUID


class Mechanism(abc.ABC):
    """A controller: the only kind of part that changes anything.

    ``name``: MoM's name in the ``controllers`` key.  ``entity``: whose
    controls it consumes, ``"host"`` or ``"guest"``; ``controls``: which.
    ``needs_hypervisor``: it acts through the hypervisor, so nothing is
    tried while the hypervisor is unreachable.  ``dry_run``: decide and
    log, change nothing.
    """

    name: ClassVar[str]
    entity: ClassVar[Literal["host", "guest"]]
    controls: ClassVar[frozenset[str]]
    needs_hypervisor: ClassVar[bool] = False
    dry_run: bool

    @classmethod
    @abc.abstractmethod
    def build(cls, context: MechanismContext) -> "Mechanism":
        """The mechanism for this host and configuration."""

    @abc.abstractmethod
    def check(self, control: str, value: Any) -> Any:
        """``value`` as the mechanism would apply it for ``control``;
        InvalidArgument when it cannot be applied."""

    @abc.abstractmethod
    async def act(self, decision: Decision) -> dict[str, Any]:
        """Apply the controls of ``decision`` this mechanism consumes; returns
        what was applied (in a dry run: what would have been).  Failures are
        logged, never raised: one refusal must not stop the other actions."""
