"""dbus-next's private members, as momservice/bus/connection.py relies on them.

connection.py overrides and reads members of dbus-next that are not its
public API; they are those of the version pyproject.toml pins.  These tests
fail when the installed dbus-next is another version, or when any of those
members is missing or has another signature, so that an upgrade shows
here first and not as a silently broken service.  No bus daemon is needed:
a bus object is made on a listening socket of our own and never
authenticates.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import socket
import tomllib
from importlib import metadata
from pathlib import Path

from dbus_next import Message, PropertyAccess
from dbus_next.aio import MessageBus
from dbus_next.service import ServiceInterface, dbus_property, method, signal

from momservice.bus import connection
from momservice.bus.connection import (PRIVATE_METHODS, MomMessageBus, is_exported_method,
                                       member_docs, property_setter, property_variants)

REPO = Path(__file__).resolve().parents[2]


def _pinned_version() -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (requirement,) = [d for d in project["dependencies"] if d.startswith("dbus-next")]
    match = re.fullmatch(r"dbus-next\s*==\s*([\w.]+)", requirement)
    assert match, f"dbus-next must be pinned to one version, not {requirement!r}"
    return match.group(1)


def test_installed_dbus_next_is_the_pinned_version():
    assert metadata.version("dbus-next") == _pinned_version() == "0.2.3"


def test_debian_package_range_admits_only_the_pinned_version():
    control = (REPO / "debian" / "control").read_text()
    pinned = _pinned_version()
    assert f"python3-dbus-next (>= {pinned})" in control
    major, minor, patch = pinned.split(".")
    assert f"python3-dbus-next (<< {major}.{minor}.{int(patch) + 1}~)" in control


def test_private_methods_have_the_signatures_relied_on():
    for (owner, name), expected in PRIVATE_METHODS.items():
        member = getattr(owner, name, None)
        assert callable(member), f"{owner.__name__}.{name} is gone"
        assert str(inspect.signature(member)) == expected, f"{owner.__name__}.{name}"


def test_overridden_methods_are_ones_dbus_next_has():
    # Every private method MomMessageBus defines replaces one of dbus-next's:
    # a rename upstream would leave ours never called.
    ours = {name for name in vars(MomMessageBus) if name.startswith("_")
            and not name.startswith("__") and callable(vars(MomMessageBus)[name])}
    # Our own helpers, not overrides.
    ours -= {"_remember_call", "_release_after_sending", "_release_when_drained"}
    assert ours and ours <= {name for (owner, name) in PRIVATE_METHODS if owner is MessageBus}
    for name in ours:
        mine = inspect.signature(getattr(MomMessageBus, name)).parameters
        theirs = inspect.signature(getattr(MessageBus, name)).parameters
        assert list(mine) == list(theirs), name


class _Probe(ServiceInterface):
    """A probe interface."""

    def __init__(self) -> None:
        super().__init__("org.example.Probe")
        self._level = "info"

    @dbus_property(access=PropertyAccess.READ)
    def Count(self) -> "u":  # noqa: F821 (dbus-next signature)
        """How many."""
        return 3

    @dbus_property()
    def Level(self) -> "s":  # noqa: F821
        """A writable one."""
        return self._level

    @Level.setter
    def Level(self, value: "s"):  # noqa: F821
        self._level = value

    @method()
    def Add(self, a: "i", b: "i") -> "i":  # noqa: F821
        """The sum."""
        return a + b

    @signal()
    def Changed(self) -> "u":  # noqa: F821
        """Sent on a change."""
        return 1


def test_decorator_markers_and_property_attributes_are_where_we_read_them():
    members = vars(_Probe)
    assert is_exported_method(members["Add"])
    assert not is_exported_method(members["Changed"]) and not is_exported_method(members["Count"])
    assert property_setter(members["Count"]) is None
    assert property_setter(members["Level"]) is not None
    assert property_setter(members["Add"]) is None
    assert member_docs(_Probe) == {"Add": "The sum.", "Changed": "Sent on a change.",
                                   "Count": "How many.", "Level": "A writable one."}
    probe = _Probe()
    variants = property_variants(probe)
    assert {k: (v.signature, v.value) for k, v in variants.items()} == {
        "Count": ("u", 3), "Level": ("s", "info")}
    got = []
    ServiceInterface._get_all_property_values(probe, lambda i, values, user, error:
                                              got.append((error, sorted(values))))
    assert got == [(None, ["Count", "Level"])]


def test_bus_internals_are_where_we_read_them(tmp_path):
    address = tmp_path / "bus"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(address))
    listener.listen(1)

    async def inspect_bus() -> dict:
        bus = MomMessageBus(bus_address=f"unix:path={address}")
        try:
            writer = bus._writer
            call = Message(destination="org.example", path="/", interface="org.example.Probe",
                           member="Add", serial=1)
            reply = MessageBus._send_reply(bus, call)  # dbus-next's, which ours wraps
            return {
                "patient": type(writer.sock).__name__,
                "idle": (writer.buf, writer.messages.qsize()),
                "disconnected": bus._disconnected,
                "exports": type(bus._path_exports).__name__,
                "exit": str(inspect.signature(reply._exit)),
                "send": str(inspect.signature(reply)),
                "introspect": type(bus._introspect_export_path("/")).__name__,
            }
        finally:
            bus._sock.close()

    try:
        seen = asyncio.run(inspect_bus())
    finally:
        listener.close()
    assert seen == {"patient": "_PatientSocket", "idle": (None, 0), "disconnected": False,
                    "exports": "dict", "exit": "(exc_type, exc_value, tb)", "send": "(reply)",
                    "introspect": "Node"}


def test_service_interface_init_sets_just_the_attributes_named():
    # init_service_interface sets these itself for every instance but a
    # class's first: an attribute dbus-next added would be missing there.
    probe = _Probe()
    assert set(vars(probe)) - {"_level"} == set(connection.SERVICE_INTERFACE_ATTRIBUTES)
    assert isinstance(vars(probe)["_ServiceInterface__buses"], set)


class _Shared(_Probe):
    """A probe whose instances share their member lists."""

    def __init__(self, name: str) -> None:
        connection.init_service_interface(self, name)


def test_shared_member_lists_are_dbus_next_own_and_the_buses_are_not_shared():
    first, second = _Shared("org.example.A"), _Shared("org.example.B")
    own = _Probe()
    assert (second.name, first.name) == ("org.example.B", "org.example.A")
    for getter in (ServiceInterface._get_properties, ServiceInterface._get_methods,
                   ServiceInterface._get_signals):
        assert getter(first) is getter(second)
        assert [m.name for m in getter(second)] == [m.name for m in getter(own)]
    ServiceInterface._add_bus(first, "bus")
    assert ServiceInterface._get_buses(first) == {"bus"}
    assert ServiceInterface._get_buses(second) == set()


def test_only_the_connection_module_touches_private_members():
    # The package's other modules use dbus-next's public API only.
    private = re.compile(r"\b(_Property|__DBUS_METHOD|__DBUS_SIGNAL|prop_setter|prop_getter|"
                         r"_writer|_path_exports|_disconnected|_send_reply|_get_properties|"
                         r"_get_all_property_values|_introspect_export_path|_default_\w+_handler|"
                         r"_emit_interface_\w+|_interface_signal_notify|_has_interface|"
                         r"_ServiceInterface__\w+)\b")
    offenders = []
    for path in sorted((REPO / "momservice").rglob("*.py")):
        if path == Path(connection.__file__):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if private.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, offenders
