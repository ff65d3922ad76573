"""Which statistics a policy reads, found in its checked tree, once per set.

"Why did my guest shrink?" wants the inputs the policy looked at.  Tracing
every read while evaluating would cost each of a thousand guests a little
on every evaluation; reading the code costs nothing at run time.  So this
is the static answer: every statistic a reference (``g.balloon_cur``,
``Host.mem_free``) or a ``Stat`` / ``StatAvg`` call with a literal name
names anywhere in the set, on any path, whether or not that evaluation
took it.  A reference through ``Host`` reads the host; any other base (the
item of ``with Guests``, a function's parameter) is taken for a guest.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterable
from typing import Any

from .ir import walk


@dataclass(frozen=True)
class FieldsRead:
    """The statistics a policy set reads: newest values and means (StatAvg)."""

    host: tuple[str, ...] = ()
    guest: tuple[str, ...] = ()
    host_means: tuple[str, ...] = ()
    guest_means: tuple[str, ...] = ()

    def __or__(self, other: "FieldsRead") -> "FieldsRead":
        return FieldsRead(*(tuple(sorted(set(a) | set(b)))
                            for a, b in zip(self.astuple(), other.astuple())))

    def astuple(self) -> tuple[tuple[str, ...], ...]:
        return (self.host, self.guest, self.host_means, self.guest_means)


def fields_read(tree: Iterable[Any], host: str) -> FieldsRead:
    """The statistics the intermediate form ``tree`` (see ``ir``) reads;
    ``host`` is the name the host is bound to."""
    found: tuple[set[str], set[str], set[str], set[str]] = (set(), set(), set(), set())
    for node in walk(list(tree)):
        kind = node[0]
        if kind == "ref" and node[2]:
            found[0 if node[1] == host else 1].add(node[2][0])
        elif kind == "mcall" and node[3] in ("Stat", "StatAvg") and node[4]:
            first = node[4][0]
            base = node[1]
            if first[0] == "const" and type(first[1]) is str and not base[2]:
                on_host = base[1] == host
                found[(0 if on_host else 1) + (2 if node[3] == "StatAvg" else 0)].add(first[1])
    return FieldsRead(*(tuple(sorted(s)) for s in found))
