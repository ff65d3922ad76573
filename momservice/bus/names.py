"""Names of the D-Bus contract: bus name, object paths, interfaces, actions."""

BUS_NAME = "org.ovirt.mom1"
MANAGER_PATH = "/org/ovirt/mom1"
HOST_PATH = "/org/ovirt/mom1/host"
GUEST_PATH_PREFIX = "/org/ovirt/mom1/guest/"

MANAGER_INTERFACE = "org.ovirt.mom1.Manager"
HOST_INTERFACE = "org.ovirt.mom1.Host"
GUEST_INTERFACE = "org.ovirt.mom1.Guest"

ACTION_MANAGE_POLICY = "org.ovirt.mom1.manage-policy"
ACTION_CONTROL_BALLOON = "org.ovirt.mom1.control-balloon"
ACTION_CONTROL_KSM = "org.ovirt.mom1.control-ksm"


def guest_path(uuid: str) -> str:
    """The object path of a guest: its UUID with ``-`` replaced by ``_``."""
    return GUEST_PATH_PREFIX + uuid.replace("-", "_")
