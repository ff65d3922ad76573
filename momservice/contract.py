"""The names of the D-Bus contract (docs/dbus-api.md), each defined here once.

Bus name, object paths, interface names, error names and polkit action
ids, as plain strings: momd's bus layer, momctl and the tests import them
from here.  Nothing here imports dbus_next, so importing the contract is
cheap.  What the properties mean (names, types, units) is the field
catalogue in ``momservice.fields``.
"""

from __future__ import annotations

BUS_NAME = "org.ovirt.mom1"

# -- object paths ----------------------------------------------------------------

MANAGER_PATH = "/org/ovirt/mom1"
HOST_PATH = f"{MANAGER_PATH}/host"
GUEST_PATH_PREFIX = f"{MANAGER_PATH}/guest/"


def guest_path(uuid: str) -> str:
    """The object path of a guest: its UUID with ``-`` replaced by ``_``."""
    return GUEST_PATH_PREFIX + uuid.replace("-", "_")


# -- interfaces --------------------------------------------------------------------

MANAGER_INTERFACE = f"{BUS_NAME}.Manager"
HOST_INTERFACE = f"{BUS_NAME}.Host"
GUEST_INTERFACE = f"{BUS_NAME}.Guest"

# The standard interfaces the contract relies on: every object answers
# Properties and Introspectable; the manager is an ObjectManager.
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"
INTROSPECTABLE_INTERFACE = "org.freedesktop.DBus.Introspectable"
OBJECT_MANAGER_INTERFACE = "org.freedesktop.DBus.ObjectManager"
#: The annotation that carries a member's doc string in introspection data.
DOC_ANNOTATION = "org.freedesktop.DBus.DocString"
#: The annotation that says whether a property's changes are signalled.
EMITS_CHANGED_ANNOTATION = "org.freedesktop.DBus.Property.EmitsChangedSignal"

# -- error names -------------------------------------------------------------------

_ERROR = f"{BUS_NAME}.Error."
POLICY_SYNTAX = _ERROR + "PolicySyntax"
POLICY_FAILED = _ERROR + "PolicyFailed"
INVALID_ARGUMENT = _ERROR + "InvalidArgument"
NOT_FOUND = _ERROR + "NotFound"
FAILED = _ERROR + "Failed"
# polkit's answers, as the bus names them.
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
INTERACTIVE_AUTHORIZATION_REQUIRED = \
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"

#: Every error name a method of the contract may answer with.
ERRORS: tuple[str, ...] = (POLICY_SYNTAX, POLICY_FAILED, INVALID_ARGUMENT, NOT_FOUND, FAILED,
                           ACCESS_DENIED, INTERACTIVE_AUTHORIZATION_REQUIRED)

# -- polkit actions ----------------------------------------------------------------

ACTION_MANAGE_POLICY = f"{BUS_NAME}.manage-policy"
ACTION_CONTROL_BALLOON = f"{BUS_NAME}.control-balloon"
ACTION_CONTROL_KSM = f"{BUS_NAME}.control-ksm"
ACTION_CONTROL_IOTUNE = f"{BUS_NAME}.control-iotune"
ACTION_CONTROL_MEMTUNE = f"{BUS_NAME}.control-memtune"
ACTION_CONTROL_VIRTIO_MEM = f"{BUS_NAME}.control-virtio-mem"
ACTION_CONTROL_CPUTUNE = f"{BUS_NAME}.control-cputune"

#: Every polkit action of polkit/org.ovirt.mom1.policy.
ACTIONS: tuple[str, ...] = (ACTION_MANAGE_POLICY, ACTION_CONTROL_BALLOON, ACTION_CONTROL_KSM,
                            ACTION_CONTROL_IOTUNE, ACTION_CONTROL_MEMTUNE,
                            ACTION_CONTROL_VIRTIO_MEM, ACTION_CONTROL_CPUTUNE)
