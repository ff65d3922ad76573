"""Our connection to the bus: dbus-next, with some of its habits corrected.

This is the one module that touches dbus-next's private members (those
named ``_...``, and the markers its decorators leave on our methods); the
rest of the package uses its public API only.  They are those of
dbus-next 0.2.3, the version pyproject.toml pins: ``PRIVATE_METHODS``
lists the methods with their signatures, and
tests/bus/test_dbus_next_private.py checks every private member used here
against the installed dbus-next.

* ObjectManager signals (InterfacesAdded/Removed) come from the manager's
  path, as the D-Bus specification and GDBus/sd-bus clients expect, not
  from the child object's path.
* No reply carries a Python traceback: an exception dbus-next would turn
  into a traceback text becomes one of the contract's named errors.
* Method handlers learn who called: each incoming call is put in
  ``current_message`` before dispatch, for polkit's subject.
* A full socket buffer (EAGAIN, as when a thousand guests appear at once)
  is a reason to wait for the socket, not to drop the connection.
* A signal finds the path of the object sending it in a table kept at
  export and unexport (dbus-next scans every export for each signal, and
  checks every export again for each unexport: with a thousand guests
  that scan was most of a cycle's CPU).  An interface exported at several
  paths signals on each of them (dbus-next: on one).
* A property set to a value of the wrong type is ``InvalidArgs``, as with
  GDBus and sd-bus (dbus-next says ``InvalidSignature``, which is about
  malformed signatures and is not in the contract).

* Messages are marshalled by momservice/bus/wire.py (writers made once per
  signature), which makes the same bytes several times faster than
  dbus-next's marshaller; anything it does not take is left to dbus-next.
  dbus-next looks its marshaller up in ``dbus_next.message`` for every
  message, so the one installed there serves every connection in momd.

It also adds ``org.freedesktop.DBus.DocString`` annotations, taken from
the docstrings of our interfaces, and ``EmitsChangedSignal`` ``false`` on
the properties an interface does not signal, to the introspection data, and answers
GetManagedObjects in one synchronous pass (dbus-next collects each
property through a callback, which with a thousand guests is the slow part).
"""

from __future__ import annotations

import asyncio
import inspect
import xml.etree.ElementTree as ET
from contextvars import ContextVar
from typing import Any

import dbus_next.message
from dbus_next import DBusError, ErrorType, Message, MessageType, Variant
from dbus_next._private.marshaller import Marshaller
from dbus_next.aio import MessageBus
from dbus_next.service import ServiceInterface, _Property

from ..contract import (DOC_ANNOTATION, EMITS_CHANGED_ANNOTATION, MANAGER_PATH,
                        OBJECT_MANAGER_INTERFACE)
from ..heap import release_free_memory
from .errors import to_dbus_error
from .wire import WireTypeError, join_object_entries, marshal_body, marshal_object_entry

#: The private methods of dbus-next (0.2.3) this module overrides or calls,
#: with the signatures it relies on.  Besides these it reads the writer's
#: ``sock``, ``buf`` and ``messages``, the bus's ``_writer``,
#: ``_disconnected`` and ``_path_exports``, ``_Property``'s ``name``,
#: ``signature``, ``access``, ``disabled``, ``prop_getter`` and
#: ``prop_setter``, the ``__DBUS_METHOD`` and ``__DBUS_SIGNAL`` markers
#: (and their ``name``), the reply sender's ``_exit``, the attributes
#: ``ServiceInterface.__init__`` sets (``SERVICE_INTERFACE_ATTRIBUTES``), and
#: ``dbus_next.message.Marshaller`` (a class taking ``(signature, body)``,
#: with ``buffer``, ``marshall()`` and ``align(n)``, which Message._marshall
#: uses for the body and the header).
PRIVATE_METHODS: dict[tuple[type, str], str] = {
    (MessageBus, "_emit_interface_added"): "(self, path, interface)",
    (MessageBus, "_emit_interface_removed"): "(self, path, removed_interfaces)",
    (MessageBus, "_default_get_managed_objects_handler"): "(self, msg, send_reply)",
    (MessageBus, "_default_properties_handler"): "(self, msg, send_reply)",
    (MessageBus, "_default_introspect_handler"): "(self, msg, send_reply)",
    (MessageBus, "_introspect_export_path"): "(self, path)",
    (MessageBus, "_send_reply"): "(self, msg)",
    (MessageBus, "_interface_signal_notify"):
        "(self, interface, interface_name, member, signature, body, unix_fds=[])",
    (MessageBus, "_has_interface"): "(self, interface: dbus_next.service.ServiceInterface) -> bool",
    (ServiceInterface, "_get_all_property_values"): "(interface, callback, user_data=None)",
    (ServiceInterface, "_get_properties"): "(interface)",
}
_METHOD_MARKER = "__DBUS_METHOD"
_SIGNAL_MARKER = "__DBUS_SIGNAL"

#: The method call being handled, set by the connection for each incoming
#: call before dbus-next dispatches it (dbus-next does not hand the message
#: to handlers; its tasks inherit this context).
current_message: ContextVar[Message | None] = ContextVar("current_message", default=None)

_HEADER = ('<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
           '"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n')


class _WireMarshaller(Marshaller):
    """dbus-next's marshaller, with the bytes made by wire.py when it can."""

    def __init__(self, signature: str, body: list) -> None:
        try:
            self.buffer = marshal_body(signature, body)
        except WireTypeError:
            super().__init__(signature, body)  # verifies: dbus-next's error if wrong
            self._wired = False
        else:
            self.signature, self.body, self._wired = signature, body, True

    def marshall(self) -> bytearray:
        return self.buffer if self._wired else super().marshall()


def install_wire_marshaller() -> None:
    """Have dbus-next marshal messages with wire.py (idempotent)."""
    dbus_next.message.Marshaller = _WireMarshaller


class _PatientSocket:
    """The bus socket as dbus-next's writer sees it: "nothing sent" instead of
    BlockingIOError when the kernel buffer is full.  The writer then keeps
    its place and waits until the socket is writable again; dbus-next alone
    treats the error as fatal and closes the connection.  (We send no file
    descriptors, which a retried sendmsg would lose.)"""

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def send(self, data: Any) -> int:
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0

    def sendmsg(self, *args: Any) -> int:
        try:
            return self._sock.sendmsg(*args)
        except BlockingIOError:
            return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def wait_when_full(bus: MessageBus) -> None:
    """Have a dbus-next connection wait for its socket when the kernel buffer
    is full, instead of closing (see ``_PatientSocket``): momd's own and a
    client's, such as momctl's, which a loaded bus reads slowly."""
    bus._writer.sock = _PatientSocket(bus._writer.sock)


class _NamedErrorReply:
    """dbus-next's reply sender, with two corrections: any exception goes out
    as a contract error (never a traceback text), and leaving the ``with``
    block after sending the error reports the exception as handled (dbus-next
    lets it propagate, so asyncio logged every refused call as an ERROR)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __call__(self, reply: Message) -> None:
        self._inner(reply)

    def __enter__(self) -> "_NamedErrorReply":
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, tb: Any) -> bool:
        return self._exit(exc_type, exc_value, tb)

    def _exit(self, exc_type: Any, exc_value: Any, tb: Any) -> bool:
        if exc_type is None or not issubclass(exc_type, Exception):
            return False
        error = exc_value if isinstance(exc_value, DBusError) else to_dbus_error(exc_value)
        return bool(self._inner._exit(type(error), error, None))

    def send_error(self, exc: Exception) -> None:
        self._exit(type(exc), exc, exc.__traceback__)


class MomMessageBus(MessageBus):
    """A dbus-next asyncio connection that behaves as our contract needs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        install_wire_marshaller()
        super().__init__(*args, **kwargs)
        # Exported interface -> the paths it is exported at (insertion-ordered).
        self._export_paths: dict[ServiceInterface, dict[str, None]] = {}
        self._releasing: asyncio.Future | None = None
        wait_when_full(self)
        self.add_message_handler(self._remember_call)

    async def drained(self) -> None:
        """Return once everything queued for sending has been written.

        Messages leave in order: a reply queued behind a thousand signals
        waits for all of them.  Publishers pause here between slices, so
        replies get through in between.
        """
        writer = self._writer
        while writer.buf is not None or writer.messages.qsize():
            await asyncio.sleep(0.001)

    def _release_after_sending(self) -> None:
        # A reply of a thousand objects (megabytes, copied on its way out)
        # leaves its pieces free in the middle of the C heap, where glibc
        # keeps them: momd's resident size stayed 2.5 MB higher after one.
        # Once it is written, they go back to the system.
        if self._releasing is None or self._releasing.done():
            self._releasing = asyncio.ensure_future(self._release_when_drained())

    async def _release_when_drained(self) -> None:
        await self.drained()
        release_free_memory()

    @staticmethod
    def _remember_call(message: Message) -> None:
        if message.message_type == MessageType.METHOD_CALL:
            current_message.set(message)
        return None  # not handled: dbus-next dispatches it as usual

    # -- the path of each exported interface, kept with it -----------------------

    def export(self, path: str, interface: ServiceInterface) -> None:
        """Export ``interface`` at ``path`` (dbus-next's), remembering the path."""
        super().export(path, interface)
        self._export_paths.setdefault(interface, {})[path] = None

    def unexport(self, path: str, interface: ServiceInterface | str | None = None) -> None:
        """Unexport as dbus-next does, and forget the paths no longer exported."""
        before = list(self._path_exports.get(path, ()))
        super().unexport(path, interface)
        remaining = self._path_exports.get(path, ())
        for iface in before:
            if not any(kept is iface for kept in remaining):
                paths = self._export_paths.get(iface)
                if paths is not None:
                    paths.pop(path, None)
                    if not paths:
                        del self._export_paths[iface]

    def _has_interface(self, interface: ServiceInterface) -> bool:
        # Asked by dbus-next's unexport after it removed the export: look
        # only at the paths this interface was exported at.
        return any(any(iface is interface for iface in self._path_exports.get(path, ()))
                   for path in self._export_paths.get(interface, ()))

    def _interface_signal_notify(self, interface, interface_name, member, signature, body,
                                 unix_fds=[]):  # noqa: B006 (dbus-next's signature)
        paths = self._export_paths.get(interface)
        if not paths:
            raise RuntimeError(f"signal {interface_name}.{member} from an interface not exported")
        for path in paths:
            self.send(Message.new_signal(path=path, interface=interface_name, member=member,
                                         signature=signature, body=body, unix_fds=unix_fds))

    # -- ObjectManager signals from the manager's path ------------------------

    def _emit_interface_added(self, path: str, interface: ServiceInterface) -> None:
        if self._disconnected:
            return

        def send(interface: ServiceInterface, values: dict, _user: Any, error: Any) -> None:
            self.send(Message.new_signal(
                MANAGER_PATH, OBJECT_MANAGER_INTERFACE, "InterfacesAdded",
                "oa{sa{sv}}", [path, {interface.name: values if error is None else {}}]))

        ServiceInterface._get_all_property_values(interface, send)

    def _emit_interface_removed(self, path: str, removed_interfaces: list[str]) -> None:
        if self._disconnected:
            return
        self.send(Message.new_signal(
            MANAGER_PATH, OBJECT_MANAGER_INTERFACE, "InterfacesRemoved",
            "oas", [path, removed_interfaces]))

    # -- GetManagedObjects in one pass ---------------------------------------------

    def _default_get_managed_objects_handler(self, msg: Message, send_reply: Any) -> None:
        prefix = "/" if msg.path == "/" else msg.path + "/"
        try:
            body = join_object_entries(
                _object_entry(path, interfaces)
                for path, interfaces in self._path_exports.items() if path.startswith(prefix))
        except WireTypeError:  # a value wire.py does not take: dbus-next's way
            pass
        else:
            send_reply(Message.new_method_return(msg, "a{oa{sa{sv}}}", body))
            self._release_after_sending()
            return
        objects = {path: {iface.name: property_variants(iface) for iface in interfaces}
                   for path, interfaces in self._path_exports.items()
                   if path.startswith(prefix)}
        send_reply(Message.new_method_return(msg, "a{oa{sa{sv}}}", [objects]))

    # -- a wrong type for a property is InvalidArgs ------------------------------

    def _default_properties_handler(self, msg: Message, send_reply: Any) -> None:
        try:
            super()._default_properties_handler(msg, send_reply)
        except DBusError as e:
            if e.type != ErrorType.INVALID_SIGNATURE.value:
                raise
            raise DBusError(ErrorType.INVALID_ARGS, e.text) from None

    # -- never a traceback in a reply ------------------------------------------

    def _send_reply(self, msg: Message) -> "_NamedErrorReply":
        return _NamedErrorReply(super()._send_reply(msg))

    # -- introspection with doc strings ------------------------------------------

    def _default_introspect_handler(self, msg: Message, send_reply: Any) -> None:
        root = self._introspect_export_path(msg.path).to_xml()
        exported = {iface.name: iface for iface in self._path_exports.get(msg.path, [])}
        for element in root.findall("interface"):
            iface = exported.get(element.get("name"))
            if iface is not None:
                _annotate(element, type(iface))
        ET.indent(root)
        send_reply(Message.new_method_return(
            msg, "s", [_HEADER + ET.tostring(root, encoding="unicode")]))


#: The attributes ``ServiceInterface.__init__`` sets on an instance: its
#: name, the lists of its class's members and the buses it is exported on.
SERVICE_INTERFACE_ATTRIBUTES = ("name", "_ServiceInterface__methods",
                                "_ServiceInterface__properties",
                                "_ServiceInterface__signals", "_ServiceInterface__buses")
_MEMBER_LISTS: dict[type, tuple[list, list, list]] = {}


def init_service_interface(interface: ServiceInterface, name: str) -> None:
    """``ServiceInterface.__init__``, with the member lists made once per class.

    dbus-next makes an interface's lists of methods, properties and signals
    for each instance, by inspecting its class: with a thousand guests, a
    thousand copies of the same lists.  They are only read once made, so
    the instances of a class share the first one's.
    """
    lists = _MEMBER_LISTS.get(type(interface))
    if lists is None:
        ServiceInterface.__init__(interface, name)
        _MEMBER_LISTS[type(interface)] = tuple(
            getattr(interface, attr) for attr in SERVICE_INTERFACE_ATTRIBUTES[1:4])
        return
    interface.name = name
    for attr, members in zip(SERVICE_INTERFACE_ATTRIBUTES[1:4], lists):
        setattr(interface, attr, members)
    setattr(interface, SERVICE_INTERFACE_ATTRIBUTES[4], set())


def _object_entry(path: str, interfaces: list[ServiceInterface]) -> bytes:
    # An object of ours keeps its entry between replies (Published.managed_entry).
    if len(interfaces) == 1 and hasattr(interfaces[0], "managed_entry"):
        return interfaces[0].managed_entry(path, _readable(interfaces[0]))
    return marshal_object_entry(path, [
        (iface.name, [(name, signature, getter(iface))
                      for name, signature, getter in _readable(iface)])
        for iface in interfaces])


_READABLE: dict[type, list[tuple[str, str, Any]]] = {}


def _readable(interface: ServiceInterface) -> list[tuple[str, str, Any]]:
    # dbus-next makes an interface's property list from its class alone.
    readable = _READABLE.get(type(interface))
    if readable is None:
        readable = _READABLE[type(interface)] = [
            (prop.name, prop.signature, prop.prop_getter)
            for prop in ServiceInterface._get_properties(interface)
            if not prop.disabled and prop.access.readable()]
    return readable


def property_variants(interface: ServiceInterface) -> dict[str, Variant]:
    """Every readable property of an interface, read now (our getters are synchronous)."""
    return {name: Variant(signature, getter(interface))
            for name, signature, getter in _readable(interface)}


def is_exported_method(member: Any) -> bool:
    """Whether a class attribute is a method dbus-next exports (``@method()``)."""
    return _METHOD_MARKER in getattr(member, "__dict__", {})


def property_setter(member: Any) -> Any:
    """The setter of a D-Bus property (``@dbus_property``), None for anything else."""
    return member.prop_setter if isinstance(member, _Property) else None


def member_docs(cls: type) -> dict[str, str]:
    """D-Bus member name to the first paragraph of its Python docstring."""
    docs = {}
    for klass in reversed(cls.__mro__):
        for attr, member in vars(klass).items():
            if isinstance(member, _Property):
                name, doc = member.name, member.prop_getter.__doc__
            else:
                marker = (getattr(member, "__dict__", {}).get(_METHOD_MARKER)
                          or getattr(member, "__dict__", {}).get(_SIGNAL_MARKER))
                if marker is None:
                    continue
                name, doc = marker.name, member.__doc__
            if doc:
                docs[name] = _first_paragraph(doc)
    return docs


def _first_paragraph(doc: str) -> str:
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def _annotate(element: ET.Element, cls: type) -> None:
    docs = member_docs(cls)
    # Published interfaces name the properties they change without a signal.
    unsignalled = cls.unsignalled() if hasattr(cls, "unsignalled") else frozenset()
    if cls.__doc__:
        _add_doc(element, _first_paragraph(cls.__doc__), first=True)
    for child in element:
        doc = docs.get(child.get("name", ""))
        if doc and child.tag in ("method", "property", "signal"):
            _add_doc(child, doc)
        if child.tag == "property" and child.get("name") in unsignalled:
            child.append(ET.Element("annotation", name=EMITS_CHANGED_ANNOTATION, value="false"))


def _add_doc(element: ET.Element, doc: str, first: bool = False) -> None:
    annotation = ET.Element("annotation", name=DOC_ANNOTATION, value=doc)
    if first:
        element.insert(0, annotation)
    else:
        element.append(annotation)
