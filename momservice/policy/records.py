"""Structured statistics: values a policy reads with dots and may call setters on.

Most statistics are numbers.  Some are records: one object per disk of a
guest with its I/O limits (``guest.io_tune``), read as ``tune.maximum``
and ``max_io.total_bytes_sec``, and changed with calls such as
``(tune.setTotalBytesSec x)``.  The engine knows them only through
:class:`PolicyRecord`: it never looks inside one.

Records are immutable, because the same objects sit in the samples of many
evaluations (trial runs included).  A setter does not change its record:
the call is kept in the evaluation (``Env.writes``), and at the end of an
evaluation each guest's written records become one control of that guest,
under the record's ``control`` name, one item per record
(:func:`record_controls`).  A guest whose item failed gets none, like its
other controls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from .errors import PolicyError


class PolicyRecord:
    """A value with named attributes and, maybe, setters a policy calls.

    ``field``: the statistic whose list holds records of this kind (the
    engine looks for written records there only); ``control``: the guest
    control their writes become.  ``latest`` holds the attributes by name:
    the generated code reads ``obj.attr`` as ``obj.latest["attr"]`` first,
    as for an entity's newest sample, so a record's attribute costs a dict
    lookup.  Subclasses answer ``attribute`` (KeyError when they have no
    such attribute), ``call`` (record what a setter asks into ``writes``,
    this record's requests of the evaluation so far), ``request`` (the
    control item for the writes) and ``plain`` (the record as plain data,
    for the bus and JSON).
    """

    __slots__ = ()

    #: The attributes by name (see above); set by each subclass's __init__.
    latest: dict[str, Any]

    field: ClassVar[str] = ""
    control: ClassVar[str] = ""

    def attribute(self, name: str) -> Any:
        return self.latest[name]

    def call(self, method: str, args: list[Any], writes: dict[str, Any]) -> Any:
        raise PolicyError(f"{self!r} has no method {method}")

    def request(self, writes: Mapping[str, Any]) -> Any:
        return dict(writes)

    def plain(self) -> dict[str, Any]:
        return {}


#: What an evaluation keeps of the setters called: by ``id`` of the record
#: (records of two guests may be equal), the record and its requests.
Writes = dict[int, tuple[PolicyRecord, dict[str, Any]]]


def record_controls(writes: Writes, guests: Iterable[Any],
                    controls: dict[Any, dict[str, Any]]) -> None:
    """Add each guest's written records to ``controls`` (by entity): the
    control named by the record's kind is a list with one request per
    written record of the guest, in the order its statistic lists them."""
    if not writes:
        return
    fields = {record.field for record, _ in writes.values()}
    for guest in guests:
        latest = guest.latest
        for name in fields:
            items = latest.get(name)
            if type(items) is not list:
                continue
            for item in items:
                written = writes.get(id(item))
                if written is None or written[0] is not item or not written[1]:
                    continue
                requests = controls.setdefault(guest, {}).setdefault(item.control, [])
                if type(requests) is not list:
                    # The policy set the control itself with Control: its value stands.
                    continue
                requests.append(item.request(written[1]))
