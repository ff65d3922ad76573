"""Host and guests as a policy sees them (policy-language.md, "Entities")."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from ..fields import (GUEST_OPTIONAL_FIELDS, GUEST_PROPERTIES,
                      GUEST_REQUIRED_FIELDS, HOST_FIELDS)
from .errors import PolicyError

DEFAULT_HISTORY_LENGTH = 10


class Entity:
    """The host or one guest: fixed properties, a bounded sample history and
    the variables a policy keeps on it with ``SetVar``.

    The engine keeps one Entity per host and per guest for as long as they
    exist, adding a sample after each collection; the policy reads the
    newest sample as attributes and averages over the history.
    """

    __slots__ = ("kind", "props", "required", "known", "history",
                 "latest", "variables", "_averages", "_complete")

    def __init__(self, kind: str, props: Mapping[str, Any] | None = None, *,
                 required: Iterable[str] = (), optional: Iterable[str] = (),
                 history_length: int = DEFAULT_HISTORY_LENGTH) -> None:
        if history_length < 1:
            raise ValueError("history_length must be at least 1")
        self.kind = kind
        self.props: dict[str, Any] = dict(props or {})
        self.required = frozenset(required)
        self.known = self.required | frozenset(optional)
        self.history: deque[dict[str, Any]] = deque(maxlen=history_length)
        self.latest: dict[str, Any] = {}
        self.variables: dict[str, Any] = {}
        self._averages: dict[str, float] = {}
        self._complete = not self.required

    @classmethod
    def host(cls, *, history_length: int = DEFAULT_HISTORY_LENGTH) -> "Entity":
        """The host, with every host statistic known (none required)."""
        return cls("host", {}, optional=HOST_FIELDS, history_length=history_length)

    @classmethod
    def guest(cls, props: Mapping[str, Any], *,
              history_length: int = DEFAULT_HISTORY_LENGTH) -> "Entity":
        """A guest with the standard required and optional statistics."""
        return cls("guest", props, required=GUEST_REQUIRED_FIELDS,
                   optional=GUEST_OPTIONAL_FIELDS, history_length=history_length)

    @property
    def name(self) -> str:
        return str(self.props.get("name", self.kind))

    def add_sample(self, sample: Mapping[str, Any]) -> None:
        """Append a sample; a field no collector declared becomes known."""
        sample = dict(sample)
        unknown = sample.keys() - self.known
        if unknown:
            self.known = self.known | unknown
        self.history.append(sample)
        self.latest = sample
        self._averages = {}
        # Decided once per sample: every evaluation asks, for every guest.
        self._complete = all(sample.get(f) is not None for f in self.required)

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
        if field not in self.known:
            raise PolicyError(f"{self.kind} has no statistic {field!r}")
        values = [v for s in self.history if (v := s.get(field)) is not None]
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
