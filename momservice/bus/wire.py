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
import zlib
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
#: name, its properties as (name, signature, value).  A value of signature
#: ``a{sv}`` is a dict of Variants, or a list of such (key, signature,
#: value) items: then no Variant is made for it at all.
ManagedObject = tuple[str, Iterable[tuple[str, str, Any]]]


def _begin(buf: bytearray) -> tuple[int, int]:
    """Open an array of dict entries: (where its length goes, where it starts)."""
    buf += _PADS[-len(buf) % 4]
    at = len(buf)
    buf += _FALSE
    buf += _PADS[-len(buf) % 8]
    return at, len(buf)


def _end(buf: bytearray, at: int, start: int) -> None:
    _U32.pack_into(buf, at, len(buf) - start)


@lru_cache(maxsize=2048)
def _entry_head(name: str, signature: str) -> bytes:
    """What a ``{sv}`` dict entry named ``name`` holds before its value of
    ``signature``: its name, the signature, and the padding the value needs."""
    head = bytearray()
    _string(head, name)
    _signature(head, signature)
    # A dict entry starts at a multiple of 8, so the padding before the
    # value is the same wherever the entry lies: part of those bytes.
    head += _PADS[-len(head) % _ALIGN[signature[0]]]
    return bytes(head)


@lru_cache(maxsize=2048)
def _entry_writer(name: str, signature: str) -> Writer:
    """A writer of one ``{sv}`` dict entry named ``name`` with a value of
    ``signature``: its name and signature are bytes made once."""
    fixed = _entry_head(name, signature)
    value = _items if signature == "a{sv}" else _signature_writer(signature)

    def write(buf: bytearray, item: Any) -> None:
        buf += _PADS[-len(buf) % 8]
        buf += fixed
        value(buf, item)
    return write


def _items(buf: bytearray, items: Any, volatile: frozenset[str] = frozenset(),
           found: list[tuple[str, int]] | None = None, within: str = "") -> None:
    # An a{sv}: a dict of Variants, or a list of (key, signature, value).
    # With ``found``, the offset of each double named in ``volatile``
    # (``within/key`` inside an a{sv} named ``within``) is noted there.
    if not isinstance(items, list):
        _signature_writer("a{sv}")(buf, items)
        return
    at, start = _begin(buf)
    for item in items:
        if type(item) is not tuple or len(item) != 3:
            raise WireTypeError(f"not a (key, signature, value) item: {item!r}")
        key, signature, value = item
        if found is None:
            _entry_writer(key, signature)(buf, value)
            continue
        if signature == "a{sv}" and not within:
            buf += _PADS[-len(buf) % 8]
            buf += _entry_head(key, signature)
            _items(buf, value, volatile, found, key)
            continue
        _entry_writer(key, signature)(buf, value)
        if signature == "d" and key in volatile:
            found.append((_volatile_name(within, key), len(buf) - 8))
    _end(buf, at, start)


@lru_cache(maxsize=256)
def _volatile_name(within: str, key: str) -> str:
    # One string object per name, whichever entry notes it.
    return f"{within}/{key}" if within else key


def marshal_object_entry(path: str,
                         interfaces: Iterable[tuple[str, list[tuple[str, str, Any]]]],
                         volatile: frozenset[str] = frozenset(),
                         found: list[tuple[str, int]] | None = None) -> bytes:
    """One object's entry (a ``{oa{sa{sv}}}`` dict entry), written from its
    interfaces' (name, signature, value) properties: no Variant is made for
    a property (each would verify its value against its signature once
    more), nor for the items of an ``a{sv}`` given as a list.

    With ``found``, the offsets of the doubles named in ``volatile`` (``d``
    properties, and ``Prop/key`` for the ``d`` items of an ``a{sv}``
    property given as a list) are noted there, as (name, offset), offsets
    counted as if the entry started at a multiple of 8, as every dict entry
    does: its bytes are then right wherever it is placed.
    """
    buf = bytearray()
    _object_path(buf, path)
    middle = _begin(buf)
    for name, properties in interfaces:
        buf += _PADS[-len(buf) % 8]
        _string(buf, name)
        _items(buf, list(properties), volatile, found)
    _end(buf, *middle)
    return bytes(buf)


#: zlib's window for kept entries: room for the dictionary and the entry.
_WBITS = 13


class ObjectEntry:
    """One object's entry of a GetManagedObjects reply, kept between replies.

    It is kept compressed against ``dictionary``, an entry of the same kind
    (the same property names and signatures, most of its bytes): a
    thousand guests' entries take a tenth of their size.  ``doubles`` says
    where the volatile doubles lie (see ``marshal_object_entry``), so that a
    later reply can take the entry again with just those written anew.
    """

    __slots__ = ("packed", "dictionary", "names", "offsets")

    def __init__(self, data: bytes, doubles: list[tuple[str, int]], dictionary: bytes) -> None:
        packer = zlib.compressobj(6, zlib.DEFLATED, _WBITS, zdict=dictionary)
        self.packed = packer.compress(data) + packer.flush()
        self.dictionary = dictionary
        self.names = _names(tuple(name for name, _ in doubles))
        self.offsets = tuple(at for _, at in doubles)

    def with_doubles(self, values: dict[str, float]) -> bytes:
        """The entry with the volatile doubles set to ``values`` (by name)."""
        data = zlib.decompressobj(_WBITS, zdict=self.dictionary).decompress(self.packed)
        if not self.names:
            return data
        data = bytearray(data)
        for name, at in zip(self.names, self.offsets):
            _DOUBLE.pack_into(data, at, values[name])
        return data


@lru_cache(maxsize=64)
def _names(names: tuple[str, ...]) -> tuple[str, ...]:
    # The entries of one layout share one tuple of names.
    return names


_DOUBLE = _FIXED["d"]


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
    return join_object_entries(marshal_object_entry(path, interfaces)
                               for path, interfaces in objects)
