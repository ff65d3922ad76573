"""Interfaces whose properties are read from the engine through a table.

Each property is one row: its D-Bus name, signature, how to read it and a
doc string.  The same rows give the getters dbus-next exports and the
snapshot that ``publish_changes`` compares, so a PropertiesChanged signal
carries exactly the properties whose value changed, at most once a call.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, ClassVar

from dbus_next import PropertyAccess, Variant
from dbus_next.service import dbus_property

from ..fields import UNSIGNALLED_FIELDS
from ..policy.records import PolicyRecord
from .access import MomInterface
from .wire import ObjectEntry, marshal_object_entry


@dataclass(frozen=True)
class Prop:
    """One read-only property: name, D-Bus signature, reader, doc string, and
    whether its changes are signalled (PropertiesChanged)."""

    name: str
    signature: str
    read: Callable[[Any], Any]
    doc: str
    signalled: bool = True


def plain(signature: str, value: Any) -> Any:
    """A reader's value as the property's type holds it, dictionaries still
    plain (not yet Variants).

    The engine's samples may lack a field (nil) or carry a float where the
    contract has an integer: a property always has a value of its type.
    """
    if signature in ("t", "u"):
        return max(0, int(value)) if isinstance(value, (int, float)) else 0
    if signature == "x":
        return int(value) if isinstance(value, (int, float)) else 0
    if signature == "d":
        return float(value) if isinstance(value, (int, float)) else 0.0
    if signature == "b":
        return bool(value)
    if signature == "s":
        return "" if value is None else str(value)
    if signature == "a{sv}":
        return _plain(value) if isinstance(value, (dict, PolicyRecord)) else {}
    if signature == "aa{sv}":
        # A list of records (a guest's disks): each as a dictionary.
        return [_plain(item) for item in value] if isinstance(value, list) else []
    return value


def to_wire(value: Any) -> Any:
    """A ``plain`` value as dbus-next sends it: dictionaries as ``a{sv}``."""
    if isinstance(value, dict):
        return to_variants(value)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [to_variants(item) for item in value]
    return value


def coerce(signature: str, value: Any) -> Any:
    """A reader's value as the bus sends it for a property of ``signature``."""
    return to_wire(plain(signature, value))


def _plain(value: Any) -> Any:
    return value.plain() if isinstance(value, PolicyRecord) else value


def _getter(prop: Prop) -> dbus_property:
    def read(self: "Published") -> Any:
        return coerce(prop.signature, prop.read(self))
    read.__name__ = prop.name
    read.__doc__ = prop.doc
    read.__annotations__ = {"return": prop.signature}
    return dbus_property(access=PropertyAccess.READ, name=prop.name)(read)


def variant_parts(value: Any) -> tuple[str, Any] | None:
    """A policy value's signature and value as an ``a{sv}`` entry carries
    it; None for nil (left out)."""
    if isinstance(value, bool):
        return "b", value
    if isinstance(value, int):
        return ("x", value) if -2**63 <= value < 2**63 else ("s", str(value))
    if isinstance(value, float):
        return "d", value
    if isinstance(value, str):
        return "s", value
    if value is None:
        return None
    if isinstance(value, PolicyRecord):
        value = value.plain()
    if isinstance(value, dict):
        return "a{sv}", to_variants(value)
    if isinstance(value, list) and all(isinstance(v, (dict, PolicyRecord)) for v in value):
        return "aa{sv}", [to_variants(_plain(v)) for v in value]
    return "s", repr(value)


def to_variant(value: Any) -> Variant | None:
    """A policy value as a Variant for an ``a{sv}``; None for nil (left out)."""
    parts = variant_parts(value)
    return None if parts is None else Variant(*parts)


def wire_items(values: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """A dict of policy values as the (key, signature, value) items of an
    ``a{sv}`` (see ``wire.marshal_object_entry``), nil values left out."""
    return [(k, *parts) for k, parts in ((k, variant_parts(v)) for k, v in values.items())
            if parts is not None]


def to_variants(values: dict[str, Any]) -> dict[str, Variant]:
    """A dict of policy values as ``a{sv}``, nil values left out."""
    return {k: v for k, v in ((k, to_variant(x)) for k, x in values.items()) if v is not None}


def from_variants(values: dict[str, Variant]) -> dict[str, Any]:
    """An ``a{sv}`` from a caller as plain Python values."""
    return {k: (v.value if isinstance(v, Variant) else v) for k, v in values.items()}


class Published(MomInterface):
    """An exported interface with table-made properties and change publishing.

    What clients were last told is kept in one of two ways.  By default as
    the values themselves (``values``).  A subclass whose readers can read
    a snapshot of the few engine objects its properties come from
    (``snapshot``) keeps just that snapshot: with a thousand guests, a copy
    of every published value, Variants and all, was the bus layer's largest
    cost in memory, while a snapshot refers to what the engine holds anyway.
    """

    PROPERTIES: ClassVar[tuple[Prop, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        for prop in cls.__dict__.get("PROPERTIES", ()):
            setattr(cls, prop.name, _getter(prop))
        super().__init_subclass__(**kwargs)

    def __init__(self, name: str, authorizer: Any) -> None:
        super().__init__(name, authorizer)
        self._published: Any = None       # a snapshot, or a dict of values
        self._entry: ObjectEntry | None = None
        self._entry_key: Any = None

    @classmethod
    def unsignalled(cls) -> frozenset[str]:
        """The properties whose changes go out without PropertiesChanged."""
        return frozenset(p.name for p in cls.PROPERTIES if not p.signalled)

    def values(self, source: Any = None) -> dict[str, Any]:
        """Every signalled table property's value (``plain``: dictionaries not
        yet Variants), read from ``source``: a ``snapshot``, or None for the
        interface itself, now."""
        source = self if source is None else source
        return {p.name: plain(p.signature, p.read(source))
                for p in self.PROPERTIES if p.signalled}

    def snapshot(self) -> Snapshot | None:
        """What every signalled property is read from, as of now: an object
        the PROPERTIES' readers read as they read the interface, which no
        later change alters.  None (the default): the readers read only the
        interface, and the values published are kept instead."""
        return None

    def entry_key(self) -> Any:
        """What this object's GetManagedObjects entry is made from, its
        volatile doubles aside (``volatile_values``): equal to the previous
        key only if the entry's bytes are the same but for those.  None (the
        default): not known, the entry is written each time."""
        return None

    def volatile_values(self) -> dict[str, float]:
        """The current values of the doubles ``entry_key`` leaves out, by the
        names ``marshal_object_entry`` notes them under."""
        return {}

    #: The names ``managed_entry`` locates: unsignalled ``d`` properties, and
    #: unsignalled fields as keys of an ``a{sv}`` property.
    VOLATILE: ClassVar[frozenset[str]] = frozenset()

    def managed_entry(self, path: str,
                      readable: list[tuple[str, str, Callable[[Any], Any]]]) -> bytes:
        """This object's entry in a GetManagedObjects reply; ``readable`` gives
        every readable property's (name, signature, getter), in the reply's
        order.

        With a thousand guests the reply was mostly reading and marshalling
        properties that had not changed since the previous one: an entry is
        kept with its key and written again only when the key changes; the
        volatile doubles (``StatsAge``) are put into the kept bytes.
        """
        key = self.entry_key()
        if key is not None and self._entry is not None and self._entry_key == key:
            return self._entry.with_doubles(self.volatile_values())
        properties = [(self.name, self.entry_properties(readable))]
        if key is None:
            self._entry = self._entry_key = None
            return marshal_object_entry(path, properties)
        found: list[tuple[str, int]] = []
        data = marshal_object_entry(path, properties, self.VOLATILE, found)
        self._entry = ObjectEntry(data, found, _DICTIONARIES.setdefault(type(self), data))
        self._entry_key = key
        return data

    def entry_properties(self, readable: list[tuple[str, str, Callable[[Any], Any]]]
                         ) -> list[tuple[str, str, Any]]:
        """Every readable property, for a GetManagedObjects entry: ``readable``
        gives each one's (name, signature, getter), in the reply's order.

        The table's properties are read plain and an ``a{sv}`` one goes as
        items: with a thousand guests, making a Variant of every statistic
        of every guest was most of the reply's time.
        """
        rows = _rows(type(self))
        properties = []
        for name, signature, getter in readable:
            prop = rows.get(name)
            if prop is None:
                properties.append((name, signature, getter(self)))
                continue
            value = plain(signature, prop.read(self))
            properties.append((name, signature,
                               wire_items(value) if signature == "a{sv}" else to_wire(value)))
        return properties

    def mark_published(self) -> None:
        """Take the current values as known to clients (InterfacesAdded carried them)."""
        snapshot = self.snapshot()
        self._published = snapshot if snapshot is not None else self.values()

    def publish_changes(self) -> dict[str, Any]:
        """Emit one PropertiesChanged with what changed since the last call.

        A dictionary (``Statistics``) counts as changed only when an entry
        other than an unsignalled field's did; it then goes out whole.
        """
        snapshot, kept = self.snapshot(), self._published
        if snapshot is None:
            current = self._published = self.values()
            previous = kept if isinstance(kept, dict) else {}
        else:
            self._published = snapshot
            if not isinstance(kept, Snapshot):
                previous = {}
            elif snapshot.same(kept):
                return {}
            else:
                previous = self.values(kept)
            current = self.values(snapshot)
        changed = {k: to_wire(v) for k, v in current.items()
                   if _compared(previous.get(k, _UNSET)) != _compared(v)}
        if changed:
            self.emit_properties_changed(changed)
        return changed


class Snapshot:
    """Base of what ``Published.snapshot`` returns: ``same`` says whether two
    snapshots give the same signalled values (their unsignalled ones may
    differ)."""

    __slots__ = ()

    def same(self, other: "Snapshot") -> bool:
        raise NotImplementedError


_UNSET = object()


#: Per class, its first entry kept: the dictionary its later ones are
#: compressed against (see ``ObjectEntry``).
_DICTIONARIES: dict[type, bytes] = {}


@lru_cache(maxsize=None)
def _rows(cls: type[Published]) -> dict[str, Prop]:
    return {prop.name: prop for prop in cls.PROPERTIES}


def _compared(value: Any) -> Any:
    # As the bus would carry it: an a{sv} leaves out nil values, and its
    # unsignalled fields do not count.
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in UNSIGNALLED_FIELDS and v is not None}
    return value
