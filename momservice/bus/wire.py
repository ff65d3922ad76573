"""D-Bus message bodies marshalled by writers made once per signature.

dbus-next's marshaller walks the signature tree and verifies the whole body
for every message; with a thousand guests, the PropertiesChanged of one
cycle and a GetManagedObjects reply spend most of their time there.  Here
each signature becomes a tree of small writers, made once and cached, that
append to one buffer with ``struct``.  The bytes are the same as
dbus-next's (little-endian; tests/bus/test_wire.py compares them).

Checks are kept where a wrong value would make a message the bus daemon
rejects (object paths, signatures, booleans, strings with NUL): any value
a writer does not accept raises ``WireTypeError``, and the caller then
lets dbus-next marshal the body, with dbus-next's own error if it is
wrong.  Unix file descriptors (``h``) are left to dbus-next entirely.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Any, Callable, Iterable

from dbus_next import SignatureTree, Variant, is_object_path_valid

Writer = Callable[[bytearray, Any], None]

_FIXED = {"n": struct.Struct("<h"), "q": struct.Struct("<H"), "i": struct.Struct("<i"),
          "u": struct.Struct("<I"), "x": struct.Struct("<q"), "t": struct.Struct("<Q"),
          "d": struct.Struct("<d")}
_ALIGN = {"y": 1, "g": 1, "v": 1, "n": 2, "q": 2, "b": 4, "i": 4, "u": 4, "s": 4, "o": 4,
          "a": 4, "x": 8, "t": 8, "d": 8, "(": 8, "{": 8}
_U32 = _FIXED["u"]
_TRUE, _FALSE = _U32.pack(1), _U32.pack(0)
_PADS = [b"\0" * n for n in range(8)]


class WireTypeError(TypeError):
    """A value these writers do not marshal (dbus-next is asked instead)."""


def _pad(buf: bytearray, n: int) -> None:
    buf += _PADS[-len(buf) % n]


def _fixed(token: str) -> Writer:
    packer, size = _FIXED[token].pack, _FIXED[token].size

    def write(buf: bytearray, value: Any) -> None:
        if size > 1:
            buf += _PADS[-len(buf) % size]
        try:
            buf += packer(value)
        except struct.error as e:
            raise WireTypeError(str(e)) from None
    return write


def _byte(buf: bytearray, value: Any) -> None:
    if type(value) is not int or not 0 <= value < 256:
        raise WireTypeError(f"not a byte: {value!r}")
    buf.append(value)


def _boolean(buf: bytearray, value: Any) -> None:
    if type(value) is not bool:
        raise WireTypeError(f"not a boolean: {value!r}")
    buf += _PADS[-len(buf) % 4]
    buf += _TRUE if value else _FALSE


def _string(buf: bytearray, value: Any) -> None:
    if type(value) is not str or "\0" in value:
        raise WireTypeError(f"not a string: {value!r}")
    data = value.encode()
    buf += _PADS[-len(buf) % 4]
    buf += _U32.pack(len(data))
    buf += data
    buf.append(0)


def _object_path(buf: bytearray, value: Any) -> None:
    if type(value) is not str or not is_object_path_valid(value):
        raise WireTypeError(f"not an object path: {value!r}")
    _string(buf, value)


def _signature(buf: bytearray, value: Any) -> None:
    if type(value) is not str:
        raise WireTypeError(f"not a signature: {value!r}")
    if not _valid_signature(value):
        raise WireTypeError(f"not a valid signature: {value!r}")
    data = value.encode()
    buf.append(len(data))
    buf += data
    buf.append(0)


def _variant(buf: bytearray, value: Any) -> None:
    if not isinstance(value, Variant):
        raise WireTypeError(f"not a Variant: {value!r}")
    _signature(buf, value.signature)
    _signature_writer(value.signature)(buf, value.value)


def _array(element: Any) -> Writer:
    align = _ALIGN[element.token]
    if element.token == "{":
        key, value = (_writer_for(child) for child in element.children)

        def write_items(buf: bytearray, items: Any) -> None:
            if not isinstance(items, dict):
                raise WireTypeError(f"not a dict: {items!r}")
            for k, v in items.items():
                buf += _PADS[-len(buf) % 8]
                key(buf, k)
                value(buf, v)
    elif element.token == "y":  # dbus-next takes bytes for ay, and only bytes
        def write_items(buf: bytearray, items: Any) -> None:
            if not isinstance(items, (bytes, bytearray)):
                raise WireTypeError(f"not bytes: {items!r}")
            buf += items
    else:
        one = _writer_for(element)

        def write_items(buf: bytearray, items: Any) -> None:
            if not isinstance(items, list):
                raise WireTypeError(f"not a list: {items!r}")
            for item in items:
                one(buf, item)

    def write(buf: bytearray, items: Any) -> None:
        buf += _PADS[-len(buf) % 4]
        at = len(buf)
        buf += _FALSE  # the length, filled in below
        buf += _PADS[-len(buf) % align]
        start = len(buf)  # the padding before the first element is not counted
        write_items(buf, items)
        _U32.pack_into(buf, at, len(buf) - start)
    return write


def _struct(children: list[Any]) -> Writer:
    writers = [_writer_for(child) for child in children]

    def write(buf: bytearray, values: Any) -> None:
        if not isinstance(values, (list, tuple)) or len(values) != len(writers):
            raise WireTypeError(f"not a struct of {len(writers)}: {values!r}")
        buf += _PADS[-len(buf) % 8]
        for writer, value in zip(writers, values):
            writer(buf, value)
    return write


_SIMPLE: dict[str, Writer] = {"y": _byte, "b": _boolean, "s": _string, "o": _object_path,
                              "g": _signature, "v": _variant}


def _writer_for(type_: Any) -> Writer:
    token = type_.token
    if token in _FIXED:
        return _fixed(token)
    if token in _SIMPLE:
        return _SIMPLE[token]
    if token == "a":
        return _array(type_.children[0])
    if token == "(":
        return _struct(type_.children)
    raise WireTypeError(f"type {token!r} is left to dbus-next")


@lru_cache(maxsize=256)
def _valid_signature(signature: str) -> bool:
    try:
        SignatureTree(signature)
    except Exception:
        return False
    return len(signature) < 256


@lru_cache(maxsize=256)
def _signature_writer(signature: str) -> Writer:
    """One writer for a whole single complete type (a Variant's)."""
    try:
        (type_,) = SignatureTree(signature).types
    except Exception as e:  # not one valid complete type
        raise WireTypeError(f"bad variant signature {signature!r}: {e}") from None
    return _writer_for(type_)


@lru_cache(maxsize=256)
def _body_writers(signature: str) -> tuple[Writer, ...]:
    try:
        types = SignatureTree(signature).types
    except Exception as e:
        raise WireTypeError(f"bad signature {signature!r}: {e}") from None
    return tuple(_writer_for(t) for t in types)


def marshal_body(signature: str, body: list[Any]) -> bytearray:
    """The marshalled body of a message, as dbus-next would make it.

    Raises WireTypeError for anything it does not marshal itself.
    """
    if type(body) is Marshalled:
        return bytearray(body.data)
    writers = _body_writers(signature)
    if not isinstance(body, list) or len(body) != len(writers):
        raise WireTypeError(f"a body of {len(writers)} values expected: {body!r}")
    buf = bytearray()
    for writer, value in zip(writers, body):
        writer(buf, value)
    return buf


class Marshalled(list):
    """A message body marshalled already: its bytes are ``data``.

    Being an (empty) list, it passes wherever dbus-next expects a body;
    ``marshal_body`` sends ``data`` as it is.
    """

    def __init__(self, data: bytes | bytearray) -> None:
        super().__init__()
        self.data = data


#: One object of a GetManagedObjects reply: its path and, per interface
#: name, its properties as (name, signature, value).
ManagedObject = tuple[str, Iterable[tuple[str, Iterable[tuple[str, str, Any]]]]]


class ObjectEntry:
    """One object of a GetManagedObjects reply (a ``{oa{sa{sv}}}`` entry),
    marshalled as if it started at an offset that is a multiple of 8, as
    every dict entry does: its bytes are then right wherever it is placed.

    ``doubles`` says where the values of the volatile properties lie
    (``Prop``, or ``Prop/key`` for an entry of an ``a{sv}`` property), so
    that a later reply can take these bytes again with just those values
    written anew (``with_doubles``).
    """

    __slots__ = ("data", "doubles")

    def __init__(self, data: bytes, doubles: dict[str, int]) -> None:
        self.data = data
        self.doubles = doubles

    def with_doubles(self, values: dict[str, float]) -> bytes:
        """The entry with the volatile doubles set to ``values`` (same names)."""
        if not self.doubles:
            return self.data
        data = bytearray(self.data)
        for name, at in self.doubles.items():
            _DOUBLE.pack_into(data, at, values[name])
        return data


_DOUBLE = _FIXED["d"]


def _begin(buf: bytearray) -> tuple[int, int]:
    """Open an array of dict entries: (where its length goes, where it starts)."""
    buf += _PADS[-len(buf) % 4]
    at = len(buf)
    buf += _FALSE
    buf += _PADS[-len(buf) % 8]
    return at, len(buf)


def _end(buf: bytearray, at: int, start: int) -> None:
    _U32.pack_into(buf, at, len(buf) - start)


def marshal_object_entry(path: str,
                         interfaces: Iterable[tuple[str, Iterable[tuple[str, str, Any]]]],
                         volatile: frozenset[str] = frozenset()) -> ObjectEntry:
    """One object's entry, written from plain values: no Variant is made for
    a property (each would verify its value against its signature once
    more).  Properties named in ``volatile`` of type ``d``, and the entries
    of an ``a{sv}`` whose key is in ``volatile`` and whose value is a
    ``d``, are located in the result's ``doubles``."""
    buf = bytearray()
    doubles: dict[str, int] = {}
    _object_path(buf, path)
    middle = _begin(buf)
    for name, properties in interfaces:
        buf += _PADS[-len(buf) % 8]
        _string(buf, name)
        inner = _begin(buf)
        for prop, signature, value in properties:
            buf += _PADS[-len(buf) % 8]
            _string(buf, prop)
            _signature(buf, signature)
            if volatile and signature == "d" and prop in volatile:
                buf += _PADS[-len(buf) % 8]
                doubles[prop] = len(buf)
            if volatile and signature == "a{sv}" and isinstance(value, dict):
                _volatile_dict(buf, prop, value, volatile, doubles)
            else:
                _signature_writer(signature)(buf, value)
        _end(buf, *inner)
    _end(buf, *middle)
    return ObjectEntry(bytes(buf), doubles)


def _volatile_dict(buf: bytearray, prop: str, items: dict, volatile: frozenset[str],
                   doubles: dict[str, int]) -> None:
    # An a{sv} as its generic writer writes it, noting where volatile doubles go.
    at, start = _begin(buf)
    for key, variant in items.items():
        buf += _PADS[-len(buf) % 8]
        _string(buf, key)
        if not isinstance(variant, Variant):
            raise WireTypeError(f"not a Variant: {variant!r}")
        _signature(buf, variant.signature)
        if variant.signature == "d" and key in volatile:
            buf += _PADS[-len(buf) % 8]
            doubles[f"{prop}/{key}"] = len(buf)
        _signature_writer(variant.signature)(buf, variant.value)
    _end(buf, at, start)


def join_object_entries(entries: Iterable[bytes]) -> Marshalled:
    """The body of a GetManagedObjects reply (``a{oa{sa{sv}}}``) from its entries."""
    buf = bytearray()
    outer = _begin(buf)
    for data in entries:
        buf += _PADS[-len(buf) % 8]
        buf += data
    _end(buf, *outer)
    return Marshalled(buf)


def marshal_managed_objects(objects: Iterable[ManagedObject]) -> Marshalled:
    """The body of a GetManagedObjects reply (``a{oa{sa{sv}}}``), written from
    plain values."""
    return join_object_entries(marshal_object_entry(path, interfaces).data
                               for path, interfaces in objects)
