"""Host and guests as a policy sees them (policy-language.md, "Entities")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import compress
from operator import is_not
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
    """

    __slots__ = ("required", "known", "fields", "index", "layout", "layout_keys",
                 "_root", "_layouts")

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

    __slots__ = ("kind", "props", "schema", "history", "times", "history_length",
                 "latest", "variables", "revision", "_averages", "_complete", "_latest_row")

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
        # would cost several MiB more.
        self.history: list[tuple] = []
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
        # The values of ``latest`` as a row of the schema's layout; None when
        # ``latest`` is not a row's (merged into, or the layout changed).
        self._latest_row: tuple | None = None

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

    def add_sample(self, sample: Mapping[str, Any], time: float | None = None) -> None:
        """Append a sample taken at ``time`` (seconds since the epoch, None when
        unknown); a field no collector declared becomes known."""
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
        in_step = old is not None and len(old) == len(row)
        if not in_step:
            old = tuple(map(latest.get, keys))
        changed = not in_step and latest.keys() != sample.keys()
        recheck = not in_step
        # A value equal to the newest one is kept as that very object: most
        # statistics (sizes, bounds, counters of an idle guest) repeat from
        # sample to sample, and with a thousand guests times the history a
        # fresh number object for each would be megabytes.  Only the
        # positions holding another object are looked at (in C, by map).
        moved = list(compress(_POSITIONS, map(is_not, old, row)))
        kept = []
        for i in moved:
            was, now = old[i], row[i]
            if type(was) is type(now) and was == now:
                kept.append(i)
                continue
            field = keys[i]
            if field not in UNSIGNALLED_FIELDS:
                changed = True
            if field in schema.required:
                recheck = True
        if len(kept) == len(moved):
            row = old
        elif kept:
            values = list(row)
            for i in kept:
                values[i] = old[i]
            row = tuple(values)
        if not in_step:
            latest = dict(zip(keys, row))
        elif row is not old:
            latest = dict(sample)
            for i in kept:
                latest[keys[i]] = old[i]
        # else: every value is the newest one's, and so is the dict
        self.latest = latest
        self._latest_row = row
        history = self.history
        if history and history[-1] == row:
            row = history[-1]   # the same again: one row object, kept twice
        history.append(row)
        times = self.times
        times.append(time)
        if len(history) > self.history_length:
            del history[0]
            del times[0]
        if changed:
            self.revision += 1
        if self._averages:
            self._averages = _NO_AVERAGES
        if recheck:
            # Decided once per sample: every evaluation asks, for every guest.
            self._complete = all(latest.get(f) is not None for f in schema.required)

    def _relayout(self, keys: tuple[str, ...]) -> Schema:
        """Take the schema whose rows store ``keys``, the kept rows rewritten for it."""
        old, new = self.schema, self.schema.for_layout(keys)
        rows: dict[int, tuple] = {}   # a row kept twice stays one object
        for n, row in enumerate(self.history):
            if id(row) not in rows:
                values = dict(zip(old.fields, row))
                moved = list(map(values.get, new.fields))
                while moved and moved[-1] is None:
                    moved.pop()     # beyond the end of a row: absent, as nil
                rows[id(row)] = tuple(moved)
            self.history[n] = rows[id(row)]
        self.schema = new
        self._latest_row = None
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
        # Rows older than a newly seen field are shorter: they lack it.
        values = [row[index] for row in self.history
                  if len(row) > index and row[index] is not None]
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
