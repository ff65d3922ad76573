"""wire.py makes the same bytes as dbus-next's own marshaller.

Bodies of the shapes momd sends (PropertiesChanged, GetManagedObjects,
method returns, the message header) and random ones made by hypothesis
are marshalled both ways and compared byte for byte; values wire.py must
not take go to dbus-next instead, which accepts or refuses them as it
always did.
"""

from __future__ import annotations

import pytest
from dbus_next import Message, SignatureBodyMismatchError, Variant
from dbus_next._private.marshaller import Marshaller
from dbus_next._private.unmarshaller import Unmarshaller
from hypothesis import given, settings, strategies as st

from momservice.bus.connection import _WireMarshaller, install_wire_marshaller
from momservice.bus.wire import WireTypeError, marshal_body


def _theirs(signature: str, body: list) -> bytes:
    m = Marshaller(signature, body)
    m.marshall()
    return bytes(m.buffer)


GUEST = {"Name": Variant("s", "vm-1"), "BalloonCurrent": Variant("t", 2 ** 40),
         "Ok": Variant("b", True), "Ratio": Variant("d", 0.25), "Delta": Variant("x", -5),
         "Count": Variant("u", 7),
         "Statistics": Variant("a{sv}", {"rss": Variant("x", 3), "s": Variant("s", "é")})}


@pytest.mark.parametrize("signature, body", [
    ("sa{sv}as", ["org.ovirt.mom1.Guest", GUEST, []]),
    ("sa{sv}as", ["org.ovirt.mom1.Guest", {}, ["A", "B"]]),
    ("a{oa{sa{sv}}}", [{"/org/ovirt/mom1/guest/a": {"org.ovirt.mom1.Guest": GUEST,
                                                    "org.freedesktop.DBus.Peer": {}},
                        "/org/ovirt/mom1": {}}]),
    ("oa{sa{sv}}", ["/x", {"i.f": GUEST}]),
    ("a(td)", [[[1, 0.5], [2 ** 63, -1.0]]]),
    ("yyyyuua(yv)", [ord("l"), 4, 1, 1, 100, 3,
                     [[1, Variant("o", "/a/b")], [3, Variant("s", "M")],
                      [8, Variant("g", "sa{sv}as")], [5, Variant("u", 9)]]]),
    ("ynqiutxdsogv", [1, -2, 3, -4, 5, 6, -7, 1.5, "s", "/o", "a{sv}", Variant("ay", b"\x01\x02")]),
    ("", []),
    ("av", [[Variant("(si)", ["a", 1]), Variant("v", Variant("s", "nested"))]]),
])
def test_known_shapes_marshal_to_the_same_bytes(signature, body) -> None:
    assert bytes(marshal_body(signature, body)) == _theirs(signature, body)


_leaf = st.sampled_from("ybnqiuxtdsog")
_sig = st.recursive(_leaf, lambda inner: st.one_of(
    inner.map(lambda s: "a" + s),
    st.tuples(_leaf, inner).map(lambda kv: "a{" + kv[0] + kv[1] + "}"),
    st.lists(inner, min_size=1, max_size=3).map(lambda xs: "(" + "".join(xs) + ")"),
    st.just("v")), max_leaves=6)

_VALUES = {"y": st.integers(0, 255), "b": st.booleans(), "n": st.integers(-2**15, 2**15 - 1),
           "q": st.integers(0, 2**16 - 1), "i": st.integers(-2**31, 2**31 - 1),
           "u": st.integers(0, 2**32 - 1), "x": st.integers(-2**63, 2**63 - 1),
           "t": st.integers(0, 2**64 - 1), "d": st.floats(allow_nan=False),
           "s": st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"])),
           "o": st.sampled_from(["/", "/a", "/org/ovirt/mom1/guest/x_1"]),
           "g": st.sampled_from(["", "s", "a{sv}", "(ii)"])}


def _value(signature: str):
    if signature in _VALUES:
        return _VALUES[signature]
    if signature == "v":
        return st.sampled_from([Variant("s", "x"), Variant("ai", [1, -2]), Variant("b", False)])
    if signature == "ay":
        return st.binary(max_size=4)
    if signature.startswith("a{"):
        key, rest = signature[2], signature[3:-1]
        return st.dictionaries(_value(key), _value(rest), max_size=3)
    if signature.startswith("a"):
        return st.lists(_value(signature[1:]), max_size=3)
    from dbus_next import SignatureTree
    children = SignatureTree(signature).types[0].children
    return st.tuples(*(_value(c.signature) for c in children)).map(list)


@settings(max_examples=300, deadline=None)
@given(st.lists(_sig, min_size=1, max_size=3).flatmap(
    lambda sigs: st.tuples(st.just("".join(sigs)), st.tuples(*(_value(s) for s in sigs)))))
def test_random_bodies_marshal_to_the_same_bytes(case) -> None:
    signature, body = case
    assert bytes(marshal_body(signature, list(body))) == _theirs(signature, list(body))


@pytest.mark.parametrize("signature, body", [
    ("o", ["not a path"]), ("b", [1]), ("s", [b"bytes"]), ("s", ["nul\0inside"]),
    ("u", [-1]), ("y", [256]), ("g", ["a{"]), ("v", ["plain"]), ("as", [("a",)]), ("ay", [[1]]),
    ("(ii)", [[1]]), ("h", [0]), ("s", []),
])
def test_what_wire_refuses_goes_to_dbus_next(signature, body) -> None:
    with pytest.raises(WireTypeError):
        marshal_body(signature, body)
    # dbus-next judges it: it refuses the same body, or marshals it its way.
    try:
        expected = _theirs(signature, body)
    except Exception as e:
        with pytest.raises(type(e)):
            _WireMarshaller(signature, body).marshall()
    else:
        assert bytes(_WireMarshaller(signature, body).marshall()) == expected


def test_messages_round_trip_through_the_installed_marshaller() -> None:
    install_wire_marshaller()
    message = Message.new_signal("/org/ovirt/mom1/guest/a", "org.freedesktop.DBus.Properties",
                                 "PropertiesChanged", "sa{sv}as",
                                 ["org.ovirt.mom1.Guest", GUEST, []])
    message.serial = 12
    data = message._marshall()
    import io
    parsed = Unmarshaller(io.BytesIO(bytes(data))).unmarshall()
    assert (parsed.path, parsed.member, parsed.signature) == (
        message.path, "PropertiesChanged", "sa{sv}as")
    assert parsed.body[1]["Statistics"].value["s"].value == "é"
    with pytest.raises(SignatureBodyMismatchError):
        Message.new_signal("/a", "a.b", "C", "u", ["not a number"])._marshall()


def test_managed_objects_marshal_as_dbus_next_would() -> None:
    from momservice.bus.wire import marshal_managed_objects
    objects = {"/org/ovirt/mom1/guest/a": {"org.ovirt.mom1.Guest": GUEST, "x.Empty": {}},
               "/org/ovirt/mom1": {}, "/org/ovirt/mom1/host": {"x.H": {"N": Variant("t", 1)}}}
    plain = [(path, [(iface, [(k, v.signature, v.value) for k, v in props.items()])
                     for iface, props in ifaces.items()]) for path, ifaces in objects.items()]
    body = marshal_managed_objects(plain)
    assert bytes(marshal_body("a{oa{sa{sv}}}", body)) == _theirs("a{oa{sa{sv}}}", [objects])
    with pytest.raises(WireTypeError):
        marshal_managed_objects([("/a", [("x.I", [("P", "u", "not a number")])])])
