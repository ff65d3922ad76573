"""Host and guests as a policy sees them (policy-language.md, "Entities")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..fields import (GUEST_OPTIONAL_FIELDS, GUEST_PROPERTIES,
                      GUEST_REQUIRED_FIELDS, HOST_FIELDS)
from .errors import PolicyError

DEFAULT_HISTORY_LENGTH = 10
_ABSENT = object()


class Schema:
    """The statistics an entity has: required, known, and the order in which
    its history stores them.  Shared by all entities of a kind, so a
    thousand guests keep one copy; an entity that meets a new field gets a
    schema of its own (``with_fields``)."""

    __slots__ = ("required", "known", "fields", "index")

    def __init__(self, required: Iterable[str], optional: Iterable[str]) -> None:
        self.required = frozenset(required)
        self.known = self.required | frozenset(optional)
        self.fields: tuple[str, ...] = tuple(sorted(self.known))
        self.index: dict[str, int] = {f: i for i, f in enumerate(self.fields)}

    def with_fields(self, names: Iterable[str]) -> "Schema":
        """This schema plus ``names``, appended so old history rows stay valid."""
        extended = Schema.__new__(Schema)
        extended.required = self.required
        extended.known = self.known | frozenset(names)
        extended.fields = self.fields + tuple(sorted(frozenset(names) - self.known))
        extended.index = {f: i for i, f in enumerate(extended.fields)}
        return extended


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
                 "latest", "variables", "_averages", "_complete")

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
        self._averages: dict[str, float] = {}
        self._complete = not self.schema.required

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
        # A value equal to the newest one is kept as that very object: most
        # statistics (sizes, bounds, counters of an idle guest) repeat from
        # sample to sample, and with a thousand guests times the history a
        # fresh number object for each would be megabytes.
        latest = self.latest
        sample = {k: (old if type(old := latest.get(k, _ABSENT)) is type(v) and old == v
                      else v)
                  for k, v in sample.items()}
        schema = self.schema
        if not sample.keys() <= schema.index.keys():
            schema = self.schema = schema.with_fields(sample.keys())
        history = self.history
        row = tuple(map(sample.get, schema.fields))
        if history and history[-1] == row:
            row = history[-1]   # the same again: one row object, kept twice
        history.append(row)
        times = self.times
        times.append(time)
        if len(history) > self.history_length:
            del history[0]
            del times[0]
        self.latest = sample
        self._averages = {}
        # Decided once per sample: every evaluation asks, for every guest.
        self._complete = all(sample.get(f) is not None for f in schema.required)

    def is_complete(self) -> bool:
        """True when the newest sample holds every required statistic."""
        return self._complete

    # -- what the policy calls -------------------------------------------

    def stat(self, field: str) -> Any:
        """Newest value of a statistic; nil when known but absent."""
        try:
            return self.latest[field]
        except KeyError:
            if field in self.known:
                return None
            raise PolicyError(f"{self.kind} has no statistic {field!r}") from None

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
