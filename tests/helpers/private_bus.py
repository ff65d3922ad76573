"""A system bus of the test's own, with the real polkitd on it.

``PrivateSystemBus`` runs a ``dbus-daemon`` with a configuration like the
system bus's (``<type>system</type>``, EXTERNAL authentication, owning a
name denied unless a ``<policy>`` allows it, method calls denied unless
allowed) that includes our ``dbus/org.ovirt.mom1.conf`` and polkit's bus
policy.  Its socket lives in a directory of its own under /tmp, mode 0755,
so that unprivileged users (``tests.helpers.as_nobody``) can connect; the pytest
``tmp_path`` (0700 under /tmp/pytest-of-root) only holds the configuration
and the logs.  Bus activation: ``service_files`` maps file names to the text
of ``.service`` files placed in the bus's service directory;
``mom_service_file(exec_line)`` gives ours with its ``Exec=`` replaced.
Activated services run as root and inherit ``DBUS_SYSTEM_BUS_ADDRESS``
pointing at this bus.

``Polkitd`` runs the real polkitd against such a bus.  polkitd reads its
actions only from /usr/share/polkit-1/actions, so our
``polkit/org.ovirt.mom1.policy`` is installed there while it runs (before
polkitd starts) and the directory is put back as it was afterwards: a file
that was there is restored, one that was not is removed.  Several fixtures
may run at once (separate pytest processes): the last one to stop restores.

``system_bus_with_polkit(tmp_path)`` combines both.  Everything here needs
root; ``skip_reason()`` says why it cannot run, for ``pytest.skip``.

Measured with polkitd 122 (Debian 12), no logind session for anyone, the
stock rules (``50-default.rules``: admins are ``unix-group:sudo``), our
actions (``auth_admin`` / ``auth_admin`` / ``auth_admin_keep``), subject
``system-bus-name``, no authentication agent on the bus:

* root's connection: ``(is_authorized=True, is_challenge=False, {})`` with
  flags 0 and 1 (AllowUserInteraction) -- polkit authorizes uid 0 for
  everything;
* nobody's connection (checked by root, or by nobody itself):
  ``(False, True, {})`` with flags 0 and 1: not in a session, so
  ``allow_any`` (``auth_admin``) applies, and without an agent the
  challenge is never started.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pwd
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping
from xml.sax.saxutils import escape

from tests.helpers.as_nobody import NOBODY, privilege_dropper
from tests.helpers.file_lock import flock_within

REPO = Path(__file__).resolve().parents[2]
MOM_BUS_CONF = REPO / "dbus" / "org.ovirt.mom1.conf"
MOM_SERVICE_FILE = REPO / "dbus" / "org.ovirt.mom1.service"
MOM_POLKIT_POLICY = REPO / "polkit" / "org.ovirt.mom1.policy"

POLKIT_NAME = "org.freedesktop.PolicyKit1"
POLKIT_ACTIONS_DIR = Path("/usr/share/polkit-1/actions")
POLKIT_BUS_CONFS = (
    Path("/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf"),
    Path("/etc/dbus-1/system.d/org.freedesktop.PolicyKit1.conf"),
)
POLKITD_PATHS = (
    Path("/usr/lib/polkit-1/polkitd"),
    Path("/usr/libexec/polkitd"),
    Path("/usr/libexec/polkit-1/polkitd"),
    Path("/usr/lib/policykit-1/polkitd"),
)
#: Where the action-file bookkeeping shared by concurrent fixtures lives.
ACTION_STATE_DIR = Path("/var/tmp/mom-tests-polkit-actions")

# Used when the host has no polkit bus policy to include (polkitd not from a
# package): the same rules as Debian's.
_FALLBACK_POLKIT_CONF = """\
<busconfig>
  <policy user="polkitd">
    <allow own="org.freedesktop.PolicyKit1"/>
    <allow send_interface="org.freedesktop.PolicyKit1.AuthenticationAgent"/>
  </policy>
  <policy context="default">
    <allow send_destination="org.freedesktop.PolicyKit1"/>
  </policy>
</busconfig>
"""

_BUS_CONF = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path={socket}</listen>
  <servicedir>{servicedir}</servicedir>

  <!-- The system bus's default policy: connect, yes; own a name or send a
       method call, only where a configuration file allows it. -->
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>

  <limit name="service_start_timeout">{start_timeout_ms}</limit>
{includes}
</busconfig>
"""


# --------------------------------------------------------------------------
# Finding things


def find_dbus_daemon() -> str | None:
    return shutil.which("dbus-daemon") or next(
        (str(p) for p in (Path("/usr/bin/dbus-daemon"), Path("/bin/dbus-daemon"))
         if os.access(p, os.X_OK)), None)


def find_polkitd() -> str | None:
    found = next((str(p) for p in POLKITD_PATHS if os.access(p, os.X_OK)), None)
    return found or shutil.which("polkitd")


def find_polkit_bus_conf() -> Path | None:
    return next((p for p in POLKIT_BUS_CONFS if p.is_file()), None)


def skip_reason(*, polkit: bool = True) -> str | None:
    """Why a private bus (with polkitd) cannot run here, or None."""
    if os.geteuid() != 0:
        return "a private system bus with polkitd needs root"
    if find_dbus_daemon() is None:
        return "dbus-daemon is not installed"
    if shutil.which("dbus-send") is None:
        return "dbus-send is not installed"
    if polkit:
        if find_polkitd() is None:
            return "polkitd is not installed"
        try:
            pwd.getpwnam("polkitd")
        except KeyError:
            return "the polkitd user does not exist"
    try:
        pwd.getpwnam(NOBODY)
    except KeyError:
        return "the nobody user does not exist"
    if privilege_dropper() is None:
        return "neither setpriv nor runuser is installed"
    return None


def mom_service_file(exec_line: str, source: Path = MOM_SERVICE_FILE) -> str:
    """Our bus activation file with ``Exec=`` replaced by ``exec_line``."""
    lines = source.read_text().splitlines()
    replaced = [f"Exec={exec_line}" if line.startswith("Exec=") else line for line in lines]
    if replaced == lines and f"Exec={exec_line}" not in lines:
        raise ValueError(f"{source} has no Exec= line")
    return "\n".join(replaced) + "\n"


# --------------------------------------------------------------------------
# Processes


def _children(pid: int) -> list[int]:
    """The direct children of ``pid`` (Linux /proc/PID/task/*/children)."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found.extend(int(c) for c in children.read_text().split())
    return found


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, deepest first.

    dbus-daemon starts an activated service through a babysitter process:
    the service is a grandchild.
    """
    found: list[int] = []
    for child in _children(pid):
        found.extend(_descendants(child))
        found.append(child)
    return found


def _terminate(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM ``process``; SIGKILL if it outlives ``timeout``; reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout)


def _terminate_pids(pids: Iterable[int], timeout: float) -> None:
    """SIGTERM processes that are not our children, then SIGKILL leftovers."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# --------------------------------------------------------------------------
# The bus


class _LoggedProcess:
    """A daemon started by a test: its process and the file it logs to."""

    process: subprocess.Popen | None
    log_file: Path

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""


class PrivateSystemBus(_LoggedProcess):
    """A ``dbus-daemon`` configured like the system bus, on its own socket.

    ``tmpdir`` holds the configuration and the daemon's log; the socket is in
    a 0755 directory of its own under /tmp (``runtime_dir``), removed on
    ``stop``.  ``extra_conf_dirs`` are more ``<includedir>``s;
    ``service_files`` ({file name: text}) go to the activation directory.
    """

    def __init__(self, tmpdir: str | Path, *, extra_conf_dirs: Iterable[str | Path] = (),
                 service_files: Mapping[str, str] | None = None,
                 mom_conf: str | Path | None = MOM_BUS_CONF,
                 polkit_conf: bool = True,
                 service_start_timeout: float = 25.0) -> None:
        self.tmpdir = Path(tmpdir).absolute()
        self.extra_conf_dirs = [Path(d).absolute() for d in extra_conf_dirs]
        self.service_files = dict(service_files or {})
        self.mom_conf = Path(mom_conf) if mom_conf is not None else None
        self.polkit_conf = polkit_conf
        self.service_start_timeout = service_start_timeout
        self.conf_dir = self.tmpdir / "system.d"
        self.service_dir = self.tmpdir / "system-services"
        self.config_file = self.tmpdir / "system.conf"
        self.log_file = self.tmpdir / "dbus-daemon.log"
        self.runtime_dir: Path | None = None
        self.process: subprocess.Popen | None = None
        self._address: str | None = None

    # -- addresses

    @property
    def socket_path(self) -> Path:
        if self.runtime_dir is None:
            raise RuntimeError("the bus is not started")
        return self.runtime_dir / "system_bus_socket"

    @property
    def address(self) -> str:
        """The address to connect to (``unix:path=...``)."""
        return f"unix:path={self.socket_path}"

    def client_env(self) -> dict[str, str]:
        """What a client needs in its environment to use this bus as the system bus."""
        return {"DBUS_SYSTEM_BUS_ADDRESS": self.address}

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: os.environ) with the system bus set to this one."""
        merged = dict(os.environ if base is None else base)
        merged.update(self.client_env())
        return merged

    # -- lifecycle

    def _write_config(self) -> None:
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.conf_dir.mkdir(exist_ok=True)
        self.service_dir.mkdir(exist_ok=True)
        if self.mom_conf is not None:
            shutil.copyfile(self.mom_conf, self.conf_dir / "org.ovirt.mom1.conf")
        if self.polkit_conf:
            source = find_polkit_bus_conf()
            target = self.conf_dir / "org.freedesktop.PolicyKit1.conf"
            if source is not None:
                shutil.copyfile(source, target)
            else:
                target.write_text(_FALLBACK_POLKIT_CONF)
        for name, text in self.service_files.items():
            if "/" in name or not name.endswith(".service"):
                raise ValueError(f"bad service file name {name!r}")
            (self.service_dir / name).write_text(text)
        includes = [self.conf_dir, *self.extra_conf_dirs]
        self.config_file.write_text(_BUS_CONF.format(
            socket=escape(str(self.socket_path)),
            servicedir=escape(str(self.service_dir)),
            start_timeout_ms=int(self.service_start_timeout * 1000),
            includes="\n".join(f"  <includedir>{escape(str(d))}</includedir>"
                               for d in includes)))

    def start(self, timeout: float = 15.0) -> None:
        """Start the daemon; return once it has printed its address."""
        if self.running:
            raise RuntimeError("the bus is already running")
        daemon = find_dbus_daemon()
        if daemon is None:
            raise FileNotFoundError("dbus-daemon is not installed")
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="mom-bus-", dir="/tmp"))
        os.chmod(self.runtime_dir, 0o755)
        try:
            self._write_config()
            # Activated services inherit the daemon's environment: they find
            # this bus as their system bus.
            env = dict(os.environ)
            env.update(self.client_env())
            env.pop("DBUS_SESSION_BUS_ADDRESS", None)
            read_fd, write_fd = os.pipe()
            try:
                with open(self.log_file, "ab") as log:
                    self.process = subprocess.Popen(
                        [daemon, f"--config-file={self.config_file}", "--nofork",
                         "--nopidfile", f"--print-address={write_fd}"],
                        stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                        pass_fds=(write_fd,), start_new_session=True)
                os.close(write_fd)
                write_fd = -1
                printed = self._read_line(read_fd, timeout)
            finally:
                os.close(read_fd)
                if write_fd >= 0:
                    os.close(write_fd)
            if not printed.startswith("unix:"):
                raise RuntimeError(
                    f"dbus-daemon did not start (exit {self.process.poll()}):\n{self.log_text()}")
            self._address = printed.strip()
        except BaseException:
            self.stop()
            raise

    def _read_line(self, fd: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"dbus-daemon did not start within {timeout} s:\n"
                                   f"{self.log_text()}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                data += chunk
        return data.decode(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the daemon and what it activated; remove the socket directory."""
        if self.process is not None:
            _terminate_pids(self.activated_pids(), timeout)
            _terminate(self.process, timeout)
            self.process = None
        if self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            self.runtime_dir = None

    def activated_pids(self) -> list[int]:
        """The processes this bus started (and theirs).

        dbus-daemon detaches what it activates (its parent becomes init), so
        they are found by the DBUS_STARTER_ADDRESS it gives them.
        """
        if self.runtime_dir is None:
            return []
        needle = f"DBUS_STARTER_ADDRESS=unix:path={self.socket_path}".encode()
        found: list[int] = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                entries = environ.read_bytes().split(b"\0")
            except OSError:
                continue
            if any(e == needle or e.startswith(needle + b",") for e in entries):
                pid = int(environ.parent.name)
                found.extend(_descendants(pid))
                found.append(pid)
        return found

    def __enter__(self) -> "PrivateSystemBus":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- small synchronous queries (dbus-send: usable with or without a loop)

    def call_bus(self, member: str, *args: str, timeout: float = 10.0) -> str:
        """Call ``org.freedesktop.DBus.<member>``; ``args`` in dbus-send syntax."""
        result = subprocess.run(
            ["dbus-send", f"--bus={self.address}", "--print-reply",
             f"--reply-timeout={int(timeout * 1000)}", "--dest=org.freedesktop.DBus",
             "/org/freedesktop/DBus", f"org.freedesktop.DBus.{member}", *args],
            capture_output=True, text=True, timeout=timeout + 5)
        if result.returncode != 0:
            raise RuntimeError(f"{member} failed: {result.stderr.strip()}")
        return result.stdout

    def name_has_owner(self, name: str) -> bool:
        return "boolean true" in self.call_bus("NameHasOwner", f"string:{name}")

    def wait_for_name(self, name: str, timeout: float = 15.0, *,
                      owned: bool = True, process: subprocess.Popen | None = None) -> None:
        """Wait until ``name`` is (or, ``owned=False``, is no longer) owned.

        Gives up early when ``process`` (the one expected to own it) exits.
        """
        deadline = time.monotonic() + timeout
        while self.name_has_owner(name) != owned:
            if process is not None and process.poll() is not None and owned:
                raise RuntimeError(f"process exited ({process.returncode}) "
                                   f"before owning {name}")
            if time.monotonic() > deadline:
                state = "owned" if owned else "released"
                raise TimeoutError(f"{name} not {state} within {timeout} s")
            time.sleep(0.05)


# --------------------------------------------------------------------------
# polkit's action files


class ActionFiles:
    """Install action files in polkit's directory; put it back as it was.

    Shared by concurrent fixtures through flock()s in ``ACTION_STATE_DIR``:
    each user holds a shared lock on ``users`` while installed; the first
    installer records the original state (a copy, or "absent"); whoever
    uninstalls last (gets the lock exclusively) restores it.  A crashed run
    leaves the record, so the next run still restores the true original.
    """

    def __init__(self, sources: Iterable[str | Path] = (MOM_POLKIT_POLICY,),
                 actions_dir: Path = POLKIT_ACTIONS_DIR,
                 state_dir: Path = ACTION_STATE_DIR) -> None:
        self.sources = [Path(s) for s in sources]
        self.actions_dir = Path(actions_dir)
        self.state_dir = Path(state_dir)
        self._users_fd: int | None = None

    @contextlib.contextmanager
    def _mutex(self, timeout: float) -> Iterator[None]:
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.state_dir / "mutex", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            flock_within(fd, timeout, f"{self.state_dir}/mutex", interval=0.05)
            yield
        finally:
            os.close(fd)

    def _records(self, source: Path) -> tuple[Path, Path]:
        return (self.state_dir / f"{source.name}.orig",
                self.state_dir / f"{source.name}.absent")

    @property
    def installed(self) -> bool:
        return self._users_fd is not None

    def install(self, timeout: float = 30.0) -> None:
        if self._users_fd is not None:
            return
        with self._mutex(timeout):
            fd = os.open(self.state_dir / "users", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_SH)  # uncontended: exclusive only under the mutex
            self._users_fd = fd
            try:
                for source in self.sources:
                    dest = self.actions_dir / source.name
                    saved, absent = self._records(source)
                    if not saved.exists() and not absent.exists():
                        if dest.exists():
                            shutil.copy2(dest, saved)
                        else:
                            absent.touch()
                    self._write(dest, source.read_bytes())
            except BaseException:
                self._release_locked()
                raise

    def uninstall(self, timeout: float = 30.0) -> None:
        if self._users_fd is None:
            return
        with self._mutex(timeout):
            self._release_locked()

    def _release_locked(self) -> None:
        """Drop our use; restore the originals if nobody else uses them."""
        assert self._users_fd is not None
        os.close(self._users_fd)
        self._users_fd = None
        fd = os.open(self.state_dir / "users", os.O_RDWR | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    return  # another fixture still uses the files
                raise
            for source in self.sources:
                dest = self.actions_dir / source.name
                saved, absent = self._records(source)
                if saved.exists():
                    self._write(dest, saved.read_bytes())
                    saved.unlink()
                elif absent.exists():
                    with contextlib.suppress(FileNotFoundError):
                        dest.unlink()
                    absent.unlink()
        finally:
            os.close(fd)

    @staticmethod
    def _write(dest: Path, content: bytes) -> None:
        """Replace ``dest`` atomically (polkitd watches the directory)."""
        with contextlib.suppress(OSError):
            if dest.read_bytes() == content:
                return
        tmp = dest.with_name(f".{dest.name}.mom-test")
        tmp.write_bytes(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)


def replaced_actions_reason(action: str) -> str | None:
    """Why polkitd cannot know ``action`` now, or None: the actions directory is
    the machine's, and a test run of another checkout (whose file lacks the
    action) may install its own file while this run's polkitd is up."""
    installed = POLKIT_ACTIONS_DIR / MOM_POLKIT_POLICY.name
    try:
        if f'id="{action}"' in installed.read_text(errors="replace"):
            return None
    except OSError as e:
        return f"{installed} is unreadable: {e}"
    return f"{installed} lacks {action}: another test run replaced it while this one ran"


# --------------------------------------------------------------------------
# polkitd


class Polkitd(_LoggedProcess):
    """The real polkitd on ``bus``, with our actions installed while it runs."""

    def __init__(self, bus: PrivateSystemBus, *, binary: str | None = None,
                 action_files: Iterable[str | Path] = (MOM_POLKIT_POLICY,),
                 log_file: Path | None = None, command_prefix: Sequence[str] = ()) -> None:
        self.bus = bus
        self.binary = binary or find_polkitd()
        # Runs polkitd, e.g. in a namespace; it must exec it (stop() signals this pid).
        self.command_prefix = list(command_prefix)
        self.actions = ActionFiles(action_files)
        self.log_file = log_file or bus.tmpdir / "polkitd.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> None:
        """Install the actions, start polkitd, wait until it owns its name."""
        if self.binary is None:
            raise FileNotFoundError("polkitd is not installed")
        if not self.bus.running:
            raise RuntimeError("the bus is not running")
        if self.running:
            raise RuntimeError("polkitd is already running")
        self.actions.install()
        try:
            env = self.bus.env()
            env.pop("DBUS_SESSION_BUS_ADDRESS", None)
            with open(self.log_file, "ab") as log:
                # polkitd starts as root and switches to the polkitd user
                # itself; it stays a direct child, so stop() reaches it.
                self.process = subprocess.Popen(
                    [*self.command_prefix, self.binary], stdin=subprocess.DEVNULL,
                    stdout=log, stderr=log,
                    env=env, start_new_session=True)
            try:
                self.bus.wait_for_name(POLKIT_NAME, timeout, process=self.process)
            except (RuntimeError, TimeoutError) as e:
                raise RuntimeError(f"polkitd did not start: {e}\n{self.log_text()}") from None
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polkitd and restore the actions directory."""
        try:
            if self.process is not None:
                _terminate(self.process, timeout)
                self.process = None
        finally:
            self.actions.uninstall()

    def __enter__(self) -> "Polkitd":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------
# Both


@dataclass
class SystemBusWithPolkit:
    bus: PrivateSystemBus
    polkit: Polkitd

    @property
    def address(self) -> str:
        return self.bus.address

    @property
    def polkit_running(self) -> bool:
        return self.polkit.running

    def client_env(self) -> dict[str, str]:
        return self.bus.client_env()

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        return self.bus.env(base)


@contextlib.contextmanager
def system_bus_with_polkit(tmp_path: str | Path, *, polkit: bool = True,
                           extra_conf_dirs: Iterable[str | Path] = (),
                           service_files: Mapping[str, str] | None = None,
                           action_files: Iterable[str | Path] = (MOM_POLKIT_POLICY,)
                           ) -> Iterator[SystemBusWithPolkit]:
    """A private system bus with polkitd on it (``polkit=False``: without),
    knowing the actions of ``action_files``.

    Yields an object with ``.address``, ``.polkit_running``, ``.bus``,
    ``.polkit`` and ``.env()``.  Stopping ``.polkit`` inside the block
    simulates a host where polkit is absent.
    """
    bus = PrivateSystemBus(Path(tmp_path) / "bus", extra_conf_dirs=extra_conf_dirs,
                           service_files=service_files)
    daemon = Polkitd(bus, action_files=action_files)
    bus.start()
    try:
        if polkit:
            daemon.start()
        yield SystemBusWithPolkit(bus, daemon)
    finally:
        try:
            daemon.stop()
        finally:
            bus.stop()
