"""A libvirtd of the test's own, on its own socket, isolated from the host.

The daemon runs as root (it must, to be a realistic system daemon) but:

* listens only on a UNIX socket in a directory of the test's
  (``unix_sock_dir``), never on TCP/TLS, with ``auth_unix_rw = "none"``;
* reads a generated ``libvirtd.conf`` (``--config``) and writes its pid file
  into the test's directory (``--pid-file``);
* loads driver modules only from a private directory (``LIBVIRT_DRIVER_DIR``)
  holding links to the modules asked for - none by default, which leaves the
  built-in test driver (``test+unix:///default?socket=...``);
* with ``isolate=True`` (the default) runs in a private mount namespace with
  tmpfs over ``/run`` and the other ``private_dirs``, so whatever it writes
  there (``/run/libvirt/common/system.token``, driver state) never reaches
  the host or a libvirtd the machine runs.  Directories that do not exist on
  the host are left alone (creating them would touch the host).

Later tests reuse it for a ``qemu:///system`` daemon: pass
``driver_modules=("qemu",)`` and whatever ``private_dirs`` that needs.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterable, Mapping

MODULE_DIRS = (
    Path("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver"),
    Path("/usr/lib64/libvirt/connection-driver"),
    Path("/usr/lib/libvirt/connection-driver"),
)
DEFAULT_PRIVATE_DIRS = ("/run", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt")


def find_libvirtd() -> str | None:
    """The monolithic libvirtd binary, if installed."""
    found = shutil.which("libvirtd")
    if found:
        return found
    for candidate in ("/usr/sbin/libvirtd", "/usr/local/sbin/libvirtd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def config_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(config_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class PrivateLibvirtd:
    """Start, stop, kill and restart a private libvirtd under ``base``."""

    def __init__(self, base: Path, *, binary: str | None = None, isolate: bool = True,
                 private_dirs: Iterable[str] = DEFAULT_PRIVATE_DIRS,
                 driver_modules: Iterable[str] = (),
                 extra_config: Mapping[str, object] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.base = Path(base).absolute()
        self.binary = binary or find_libvirtd()
        if self.binary is None:
            raise FileNotFoundError("libvirtd is not installed")
        self.isolate = isolate
        self.private_dirs = [d for d in private_dirs if os.path.isdir(d)]
        for d in self.private_dirs:
            if self.isolate and (self.base == Path(d) or Path(d) in self.base.parents):
                raise ValueError(f"{self.base} would be hidden by the tmpfs on {d}")
        self.sock_dir = self.base / "sock"
        self.run_dir = self.base / "run"
        self.driver_dir = self.base / "drivers"
        self.config_path = self.base / "libvirtd.conf"
        self.pid_path = self.run_dir / "libvirtd.pid"
        self.log_path = self.base / "libvirtd.log"
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        for d in (self.sock_dir, self.run_dir, self.driver_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._link_modules(driver_modules)
        self._write_config(extra_config or {})

    # -- setup --

    def _link_modules(self, names: Iterable[str]) -> None:
        for name in names:
            filename = f"libvirt_driver_{name}.so"
            for directory in MODULE_DIRS:
                if (directory / filename).exists():
                    link = self.driver_dir / filename
                    if not link.exists():
                        link.symlink_to(directory / filename)
                    break
            else:
                raise FileNotFoundError(f"libvirt driver module {filename} not found")

    def _write_config(self, extra: Mapping[str, object]) -> None:
        settings: dict[str, object] = {
            "listen_tls": 0,
            "listen_tcp": 0,
            "unix_sock_dir": str(self.sock_dir),
            "unix_sock_rw_perms": "0700",
            "auth_unix_rw": "none",
            "auth_unix_ro": "none",
            # Warnings and errors only, to our log file (via stderr).
            "log_outputs": "3:stderr",
        }
        settings.update(extra)
        self.config_path.write_text(
            "".join(f"{key} = {config_value(value)}\n" for key, value in settings.items()))

    # -- addresses --

    @property
    def socket_path(self) -> Path:
        return self.sock_dir / "libvirt-sock"

    def uri(self, driver: str = "test", path: str = "/default") -> str:
        """A URI reaching ``driver`` through this daemon's socket."""
        return f"{driver}+unix://{path}?socket={self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.poll() is None else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- life cycle --

    def _command(self) -> list[str]:
        daemon = [self.binary, "--config", str(self.config_path),
                  "--pid-file", str(self.pid_path)]
        if not self.isolate:
            return daemon
        unshare = shutil.which("unshare")
        if unshare is None:
            raise FileNotFoundError("unshare (util-linux) is needed to isolate libvirtd")
        mounts = "".join(f"mount -t tmpfs -o mode=0755 mom-test {shlex.quote(d)} && "
                         for d in self.private_dirs)
        # unshare execs sh, which execs libvirtd: the Popen pid is the
        # daemon's, so kill() hits the daemon itself.
        return [unshare, "--mount", "--propagation", "private", "--",
                "/bin/sh", "-c", f"{mounts}exec {shlex.join(daemon)}"]

    def start(self, timeout: float = 15.0) -> None:
        """Start the daemon and wait until its socket accepts connections."""
        if self.pid is not None:
            raise RuntimeError("libvirtd is already running")
        env = dict(os.environ)
        env.update({"LIBVIRT_DRIVER_DIR": str(self.driver_dir)})
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"libvirtd exited with {self.process.returncode}:\n{self.log_text()}")
            if self._socket_answers():
                return
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"libvirtd did not listen within {timeout} s:\n{self.log_text()}")

    def _socket_answers(self) -> bool:
        if not self.socket_path.exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            try:
                sock.connect(str(self.socket_path))
            except OSError:
                return False
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout``."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL: the daemon vanishes without closing anything."""
        self._signal_and_wait(signal.SIGKILL, timeout)

    def restart(self, timeout: float = 15.0) -> None:
        self.stop()
        self.start(timeout)

    def _signal_and_wait(self, signum: int, timeout: float) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def __enter__(self) -> "PrivateLibvirtd":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
