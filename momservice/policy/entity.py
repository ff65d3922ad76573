"""Host and guests as a policy sees them (policy-language.md, "Entities")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import compress
from operator import is_, is_not
from typing import Any

from ..fields import (GUEST_OPTIONAL_FIELDS, GUEST_PROPERTIES,
                      GUEST_REQUIRED_FIELDS, HOST_FIELDS, UNSIGNALLED_FIELDS)
from .errors import PolicyError

DEFAULT_HISTORY_LENGTH = 10
#: What ``dict.get`` gives for a field a sample does not have (not nil: nil is None).
MISSING = object()

#: Positions in a row, for picking those where two rows differ.
_POSITIONS = range(1 << 20)
#: The averages of an entity nothing has averaged since its newest sample:
#: one empty dict for all of them (never written to), not one per guest.
_NO_AVERAGES: dict[str, float] = {}
#: Layouts a schema keeps for its entities to share; past that each entity
#: that meets a new one makes its own (fields that vary that much are rare).
_MAX_LAYOUTS = 64


def _split(values: list, moving: tuple[int, ...]) -> tuple[tuple, Any]:
    """A row's ``values`` as kept: the row with None where the ``moving``
    positions are, and their values (one, or a tuple of them; None without
    any).  ``values`` is used up."""
    if not moving:
        return tuple(values), None
    if len(moving) == 1:
        i = moving[0]
        move = values[i] if i < len(values) else None
        if i < len(values):
            values[i] = None
        return tuple(values), move
    move = tuple(values[i] if i < len(values) else None for i in moving)
    for i in moving:
        if i < len(values):
            values[i] = None
    return tuple(values), move


class Schema:
    """The statistics an entity has: required, known, and the order in which
    its history stores them.

    A schema as declared (``Schema(required, optional)``) stores nothing
    yet; an entity's first sample gives it the schema of that sample's
    fields (``for_layout``), whose rows hold those fields in the sample's
    order, and only those: the other known fields come after them in
    ``fields``, beyond the end of every row (absent).  Shared by the
    entities of a kind whose samples have the same fields, so a thousand
    guests keep one copy.

    The layout's unsignalled fields (``stats_age``, the host's clock) are
    ``moving``: their value changes with every sample, so an entity keeps
    them beside its rows (see ``Entity.history``), and the rows of samples
    that differ in nothing else are one row.
    """

    __slots__ = ("required", "known", "fields", "index", "layout", "layout_keys",
                 "moving", "moving_at", "_root", "_layouts")

    def __init__(self, required: Iterable[str], optional: Iterable[str]) -> None:
        self.required = frozenset(required)
        self._root = self
        self._set(self.required | frozenset(optional), ())

    def _set(self, known: frozenset[str], layout: tuple[str, ...]) -> None:
        self.layout = layout
        self.layout_keys = frozenset(layout)
        self.known = known | self.layout_keys
        self.fields: tuple[str, ...] = layout + tuple(sorted(self.known - self.layout_keys))
        self.index: dict[str, int] = {f: i for i, f in enumerate(self.fields)}
        #: The positions of the moving fields in a row, and each one's place
        #: among them.
        self.moving: tuple[int, ...] = tuple(
            i for i, f in enumerate(layout) if f in UNSIGNALLED_FIELDS)
        self.moving_at: dict[int, int] = {i: n for n, i in enumerate(self.moving)}
        self._layouts: dict[tuple[str, ...], Schema] = {}

    def _derived(self, known: frozenset[str], layout: tuple[str, ...]) -> "Schema":
        derived = Schema.__new__(Schema)
        derived.required = self.required
        derived._root = self._root
        derived._set(known, layout)
        return derived

    def for_layout(self, layout: tuple[str, ...]) -> "Schema":
        """The schema whose rows store ``layout``'s fields in that order,
        knowing this one's fields and those."""
        root = self._root
        shared = root._layouts.get(layout)
        if shared is None:
            shared = root._derived(root.known, layout)
            if len(root._layouts) < _MAX_LAYOUTS:
                root._layouts[layout] = shared
        if self.known <= shared.known:
            return shared
        # This entity met fields its kind does not declare: they stay known.
        return self._derived(self.known, layout)


HOST_SCHEMA = Schema((), HOST_FIELDS)
GUEST_SCHEMA = Schema(GUEST_REQUIRED_FIELDS, GUEST_OPTIONAL_FIELDS)


class Entity:
    """The host or one guest: fixed properties, a bounded sample history and
    the variables a policy keeps on it with ``SetVar``.

    The engine keeps one Entity per host and per guest for as long as they
    exist, adding a sample after each collection; the policy reads the
    newest sample as attributes and averages over the history.
    """

    __slots__ = ("kind", "props", "schema", "_rows", "_moving", "times", "history_length",
                 "latest", "variables", "revision", "_averages", "_complete", "_latest_row",
                 "_history")

    def __init__(self, kind: str, props: Mapping[str, Any] | None = None, *,
                 required: Iterable[str] = (), optional: Iterable[str] = (),
                 history_length: int = DEFAULT_HISTORY_LENGTH,
                 schema: Schema | None = None) -> None:
        if history_length < 1:
            raise ValueError("history_length must be at least 1")
        self.kind = kind
        self.props: dict[str, Any] = dict(props or {})
        self.schema = schema if schema is not None else Schema(required, optional)
        # Older samples are kept as tuples in the order of the schema's
        # fields, in a plain list: with a thousand guests, dicts and deques
        # would cost several MiB more.  The moving fields' places in a row
        # hold None; their values are in ``_moving`` (one per row: the value
        # where the schema has one moving field, else a tuple of them), so
        # that an idle guest's rows, whose stats_age alone moves, are one.
        self._rows: list[tuple] = []
        self._moving: list[Any] = []
        #: When each row of ``history`` was taken (seconds since the epoch,
        #: None when the caller did not say), trimmed with it.
        self.times: list[float | None] = []
        self.history_length = history_length
        self.latest: dict[str, Any] = {}
        self.variables: dict[str, Any] = {}
        #: Moves with every sample (or ``merge``) that changes the newest
        #: value of a field other than the unsignalled ones (``stats_age``
        #: moves all the time): equal counts, equal signalled values, so a
        #: watcher compares the count instead of the samples.
        self.revision = 0
        self._averages: dict[str, float] = _NO_AVERAGES
        self._complete = not self.schema.required
        # The values of ``latest`` as a row of the schema's layout, as kept
        # (the moving fields' values in ``_moving[-1]``); None when ``latest``
        # is not a row's (merged into, or the layout changed).
        self._latest_row: tuple | None = None
        # ``history`` as last made, until the next sample (asked for one
        # field after another by GetHistory).
        self._history: list[tuple] | None = None

    @classmethod
    def host(cls, *, history_length: int = DEFAULT_HISTORY_LENGTH) -> "Entity":
        """The host, with every host statistic known (none required)."""
        return cls("host", {}, history_length=history_length, schema=HOST_SCHEMA)

    @classmethod
    def guest(cls, props: Mapping[str, Any], *,
              history_length: int = DEFAULT_HISTORY_LENGTH) -> "Entity":
        """A guest with the standard required and optional statistics."""
        return cls("guest", props, history_length=history_length, schema=GUEST_SCHEMA)

    @property
    def required(self) -> frozenset[str]:
        return self.schema.required

    @property
    def known(self) -> frozenset[str]:
        return self.schema.known

    @property
    def name(self) -> str:
        return str(self.props.get("name", self.kind))

    def add_sample(self, sample: Mapping[str, Any], time: float | None = None, *,
                   handed_over: bool = False) -> None:
        """Append a sample taken at ``time`` (seconds since the epoch, None when
        unknown); a field no collector declared becomes known.

        ``handed_over``: ``sample`` is a dict nobody else holds or changes
        (a hypervisor's new one), which may become ``latest`` itself rather
        than be copied: a thousand guests' samples then need no second dict
        each collection."""
        schema = self.schema
        keys = tuple(sample)
        if keys == schema.layout:
            row = tuple(sample.values())
        elif sample.keys() == schema.layout_keys:  # the same fields, in another order
            keys = schema.layout
            row = tuple(map(sample.get, keys))
        else:
            schema = self._relayout(keys)
            row = tuple(sample.values())
        latest = self.latest
        old = self._latest_row
        moving = schema.moving
        # The sample follows the newest one, of the same layout: ``latest``
        # is then made from the sample (in its order) ...
        follows = in_step = old is not None and len(old) == len(row)
        at = last = None
        if in_step and moving:
            # ... and compared with the kept row (in_step), whose moving
            # fields hold None: their newest values are the last of
            # ``_moving``.  A moving field without a value now is compared
            # with ``latest`` instead (None is no move).
            last = self._moving[-1]
            at = schema.moving_at
            for i in moving:
                if row[i] is None:
                    in_step = False
                    at = None
                    break
        if not in_step:
            old = tuple(map(latest.get, keys))
        changed = not follows and latest.keys() != sample.keys()
        recheck = not in_step
        # A value equal to the newest one is kept as that very object: most
        # statistics (sizes, bounds, counters of an idle guest) repeat from
        # sample to sample, and with a thousand guests times the history a
        # fresh number object for each would be megabytes.  Only the
        # positions holding another object are looked at (in C, by map).
        moved = list(compress(_POSITIONS, map(is_not, old, row)))
        kept = []   # (position, the newest value's object)
        signalled = False
        for i in moved:
            now = row[i]
            if at is not None and i in at:
                was = last if len(moving) == 1 else last[at[i]]
            else:
                was = old[i]
            if type(was) is type(now) and was == now:
                kept.append((i, was))
                continue
            field = keys[i]
            if field not in UNSIGNALLED_FIELDS:
                signalled = True
            if field in schema.required:
                recheck = True
        changed = changed or signalled
        if len(kept) == len(moved):
            # Every value is the newest one's object.
            if in_step:
                stored, move = old, last
            else:
                if not follows:
                    latest = dict(zip(keys, old))
                stored, move = _split(list(old), moving)
        else:
            if kept:
                values = list(row)
                for i, was in kept:
                    values[i] = was
            else:
                values = None
            if not follows:
                latest = dict(zip(keys, row if values is None else values))
            else:
                latest = sample if handed_over else dict(sample)
                for i, was in kept:
                    latest[keys[i]] = was
            if in_step and not signalled:
                # Only moving fields moved (there are some: nothing else is
                # unsignalled): the kept row is the newest one.
                now_values = row if values is None else values
                stored = old
                move = (now_values[moving[0]] if len(moving) == 1
                        else tuple(now_values[i] for i in moving))
            else:
                stored, move = _split(list(row) if values is None else values, moving)
        self.latest = latest
        rows = self._rows
        if rows and stored is not rows[-1] and len(stored) == len(rows[-1]) \
                and all(map(is_, stored, rows[-1])):
            stored = rows[-1]   # the same again: one row object, kept twice
        self._latest_row = stored
        rows.append(stored)
        self._moving.append(move)
        self._history = None
        times = self.times
        times.append(time)
        if len(rows) > self.history_length:
            del rows[0]
            del self._moving[0]
            del times[0]
        if changed:
            self.revision += 1
        if self._averages:
            self._averages = _NO_AVERAGES
        if recheck:
            # Decided once per sample: every evaluation asks, for every guest.
            self._complete = all(latest.get(f) is not None for f in schema.required)

    @property
    def history(self) -> list[tuple]:
        """The kept samples, oldest first, each a tuple of values in the order
        of the schema's ``fields`` (a row may end early: the fields past its
        end are absent).  Rows equal in a row are one object."""
        if self._history is not None:
            return self._history
        moving = self.schema.moving
        if not moving:
            return list(self._rows)
        history: list[tuple] = []
        before = None
        for row, move in zip(self._rows, self._moving):
            if before is not None and row is before[0] and move is before[1]:
                history.append(history[-1])
                continue
            values = list(row)
            for i, value in zip(moving, (move,) if len(moving) == 1 else move):
                if i < len(values):
                    values[i] = value
            history.append(tuple(values))
            before = (row, move)
        self._history = history
        return history

    def _relayout(self, keys: tuple[str, ...]) -> Schema:
        """Take the schema whose rows store ``keys``, the kept rows rewritten for it."""
        old, new = self.schema, self.schema.for_layout(keys)
        rows: dict[int, tuple[tuple, Any]] = {}   # a row kept twice stays one object
        history = self.history
        for n, row in enumerate(history):
            if id(row) not in rows:
                values = dict(zip(old.fields, row))
                moved = list(map(values.get, new.fields))
                while moved and moved[-1] is None:
                    moved.pop()     # beyond the end of a row: absent, as nil
                rows[id(row)] = _split(moved, new.moving)
            self._rows[n], self._moving[n] = rows[id(row)]
        self.schema = new
        self._latest_row = None
        self._history = None
        return new

    def merge(self, fields: Mapping[str, Any]) -> None:
        """Put ``fields`` into the newest sample (what was read between two
        collections); the history keeps the samples as they were taken."""
        self.latest = {**self.latest, **fields}
        self._latest_row = None
        self.revision += 1

    def is_complete(self) -> bool:
        """True when the newest sample holds every required statistic."""
        return self._complete

    # -- what the policy calls -------------------------------------------

    def stat(self, field: str) -> Any:
        """Newest value of a statistic; nil when known but absent."""
        value = self.latest.get(field, MISSING)
        if value is not MISSING:
            return value
        if field in self.schema.known:
            return None
        raise PolicyError(f"{self.kind} has no statistic {field!r}")

    def stat_avg(self, field: str) -> float:
        """Mean over the kept history, ignoring nil samples; 0.0 if all are nil."""
        try:
            return self._averages[field]
        except KeyError:
            pass
        index = self.schema.index.get(field)
        if index is None:
            raise PolicyError(f"{self.kind} has no statistic {field!r}")
        at = self.schema.moving_at.get(index)
        if at is None:
            # Rows older than a newly seen field are shorter: they lack it.
            values = [row[index] for row in self._rows
                      if len(row) > index and row[index] is not None]
        elif len(self.schema.moving) == 1:
            values = [v for v in self._moving if v is not None]
        else:
            values = [m[at] for m in self._moving if m[at] is not None]
        try:
            mean = sum(values) / len(values) if values else 0.0
        except TypeError:
            raise PolicyError(f"statistic {field!r} is not a number") from None
        if self._averages is _NO_AVERAGES:
            self._averages = {}
        self._averages[field] = mean
        return mean

    def prop(self, name: str) -> Any:
        """A fixed property (``name``, ``uuid``, ``pid``)."""
        try:
            return self.props[name]
        except KeyError:
            if name in GUEST_PROPERTIES:
                return None
            raise PolicyError(f"{self.kind} has no property {name!r}") from None

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name}>"
