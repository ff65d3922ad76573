"""Interfaces whose properties are read from the engine through a table.

Each property is one row: its D-Bus name, signature, how to read it and a
doc string.  The same rows give the getters dbus-next exports and the
snapshot that ``publish_changes`` compares, so a PropertiesChanged signal
carries exactly the properties whose value changed, at most once a call.
"""

from __future__ import annotations

from dataclasses import dataclass
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


def coerce(signature: str, value: Any) -> Any:
    # The engine's samples may lack a field (nil) or carry a float where the
    # contract has an integer: a property always has a value of its type.
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
    if signature == "aa{sv}":
        # A list of records (a guest's disks): each as a dictionary.
        return [to_variants(_plain(item)) for item in value] if isinstance(value, list) else []
    return value


def _plain(value: Any) -> Any:
    return value.plain() if isinstance(value, PolicyRecord) else value


def _getter(prop: Prop) -> dbus_property:
    def read(self: "Published") -> Any:
        return coerce(prop.signature, prop.read(self))
    read.__name__ = prop.name
    read.__doc__ = prop.doc
    read.__annotations__ = {"return": prop.signature}
    return dbus_property(access=PropertyAccess.READ, name=prop.name)(read)


def to_variant(value: Any) -> Variant | None:
    """A policy value as a Variant for an ``a{sv}``; None for nil (left out)."""
    if isinstance(value, bool):
        return Variant("b", value)
    if isinstance(value, int):
        return Variant("x", value) if -2**63 <= value < 2**63 else Variant("s", str(value))
    if isinstance(value, float):
        return Variant("d", value)
    if isinstance(value, str):
        return Variant("s", value)
    if value is None:
        return None
    if isinstance(value, PolicyRecord):
        value = value.plain()
    if isinstance(value, dict):
        return Variant("a{sv}", to_variants(value))
    if isinstance(value, list) and all(isinstance(v, (dict, PolicyRecord)) for v in value):
        return Variant("aa{sv}", [to_variants(_plain(v)) for v in value])
    return Variant("s", repr(value))


def to_variants(values: dict[str, Any]) -> dict[str, Variant]:
    """A dict of policy values as ``a{sv}``, nil values left out."""
    return {k: v for k, v in ((k, to_variant(x)) for k, x in values.items()) if v is not None}


def from_variants(values: dict[str, Variant]) -> dict[str, Any]:
    """An ``a{sv}`` from a caller as plain Python values."""
    return {k: (v.value if isinstance(v, Variant) else v) for k, v in values.items()}


class Published(MomInterface):
    """An exported interface with table-made properties and change publishing."""

    PROPERTIES: ClassVar[tuple[Prop, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        for prop in cls.__dict__.get("PROPERTIES", ()):
            setattr(cls, prop.name, _getter(prop))
        super().__init_subclass__(**kwargs)

    def __init__(self, name: str, authorizer: Any) -> None:
        super().__init__(name, authorizer)
        self._published: dict[str, Any] = {}
        self._inputs: Any = None
        self._entry: ObjectEntry | None = None
        self._entry_key: Any = None

    @classmethod
    def unsignalled(cls) -> frozenset[str]:
        """The properties whose changes go out without PropertiesChanged."""
        return frozenset(p.name for p in cls.PROPERTIES if not p.signalled)

    def values(self) -> dict[str, Any]:
        """Every signalled table property's current value, as the bus would send it."""
        return {p.name: coerce(p.signature, p.read(self))
                for p in self.PROPERTIES if p.signalled}

    def change_inputs(self) -> Any:
        """A snapshot of what the signalled properties are read from, equal to
        the previous one only if none of them can have changed; None when a
        subclass does not know (every call then reads every property).

        Reading and converting every property of a thousand guests every
        cycle, to find that most changed nothing, was most of the bus's cost.
        """
        return None

    def entry_key(self) -> Any:
        """What this object's GetManagedObjects entry is made from, its
        volatile doubles aside (``volatile_values``): equal to the previous
        key only if the entry's bytes are the same but for those.  None (the
        default): not known, the entry is written each time."""
        return None

    def volatile_values(self) -> dict[str, float]:
        """The current values of the doubles ``entry_key`` leaves out, by the
        names ``ObjectEntry.doubles`` uses."""
        return {}

    def managed_entry(self, path: str,
                      read: Callable[["Published"], list[tuple[str, str, Any]]]) -> bytes:
        """This object's entry in a GetManagedObjects reply; ``read`` gives
        every property as (name, signature, value).

        With a thousand guests the reply was mostly reading and marshalling
        properties that had not changed since the previous one: an entry is
        kept with its key and written again only when the key changes; the
        volatile doubles (``StatsAge``) are put into the kept bytes.
        """
        key = self.entry_key()
        if key is None:
            self._entry = self._entry_key = None
            return marshal_object_entry(path, [(self.name, read(self))]).data
        if self._entry is None or self._entry_key != key:
            self._entry = marshal_object_entry(path, [(self.name, read(self))],
                                               self.VOLATILE)
            self._entry_key = key
            return self._entry.data
        return self._entry.with_doubles(self.volatile_values())

    #: The names ``managed_entry`` locates: unsignalled ``d`` properties, and
    #: unsignalled fields as keys of an ``a{sv}`` property.
    VOLATILE: ClassVar[frozenset[str]] = frozenset()

    def mark_published(self) -> None:
        """Take the current values as known to clients (InterfacesAdded carried them)."""
        self._inputs = self.change_inputs()
        self._published = self.values()

    def publish_changes(self) -> dict[str, Any]:
        """Emit one PropertiesChanged with what changed since the last call.

        A dictionary (``Statistics``) counts as changed only when an entry
        other than an unsignalled field's did; it then goes out whole.
        """
        inputs = self.change_inputs()
        if inputs is not None and inputs == self._inputs:
            return {}
        self._inputs = inputs
        current = self.values()
        changed = {k: v for k, v in current.items()
                   if _compared(self._published.get(k, _UNSET)) != _compared(v)}
        self._published = current
        if changed:
            self.emit_properties_changed(changed)
        return changed


_UNSET = object()


def signalled_entries(sample: dict[str, Any]) -> dict[str, Any]:
    """A sample without its unsignalled fields (as ``StatsAge``), a new dict."""
    return {k: v for k, v in sample.items() if k not in UNSIGNALLED_FIELDS}


def _compared(value: Any) -> Any:
    return signalled_entries(value) if isinstance(value, dict) else value
