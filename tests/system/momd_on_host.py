"""momd on a systemd host: its bus, its unit and its journal, as an administrator sees them."""

from __future__ import annotations

import json
import subprocess

from momservice.contract import BUS_NAME, MANAGER_INTERFACE
from momservice.contract import HOST_PATH as HOST_OBJECT
from momservice.contract import MANAGER_PATH as MANAGER
from tests.helpers.systemd_host import SystemdHost


class Bus:
    """busctl and gdbus on the host's system bus, as root or as another user."""

    def __init__(self, host: SystemdHost) -> None:
        self.host = host

    def get(self, interface: str, prop: str, path: str = MANAGER, user: str | None = None):
        out = self.host.run(["busctl", "--json=short", "get-property", BUS_NAME, path,
                             interface, prop], user=user).stdout
        return json.loads(out)["data"]

    def call(self, path: str, method: str, *args: str, user: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess:
        """``gdbus call`` (GVariant text arguments); its error names are kept whole."""
        return self.host.run(["gdbus", "call", "--system", "--dest", BUS_NAME,
                              "--object-path", path, "--method", method, *args],
                             user=user, check=check, timeout=60)

    def manager(self, method: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.call(MANAGER, f"{MANAGER_INTERFACE}.{method}", *args, **kwargs)


def gvariant_string(text: str) -> str:
    """``text`` as a GVariant string literal for gdbus."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def main_pid(host: SystemdHost) -> int:
    return int(host.show("momd.service", "MainPID"))


def wait_active(host: SystemdHost, timeout: float = 120) -> int:
    """A bus call (which activates momd if it is not running), then wait until
    momd is active with a main process; its PID."""
    host.run(["busctl", "call", BUS_NAME, MANAGER, "org.freedesktop.DBus.Peer", "Ping"],
             check=False)

    def up():
        state = host.show("momd.service", "ActiveState")
        pid = main_pid(host)
        return pid if state == "active" and pid else None
    return host.wait_for("momd active", up, timeout)
