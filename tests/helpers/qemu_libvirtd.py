"""A private libvirtd with the QEMU driver, for guests that really boot.

Built on ``PrivateLibvirtd`` (own socket, own ``libvirtd.conf``, private
mount namespace, driver modules from a private directory): this adds what
``qemu:///system`` needs to run on a host without libvirt-daemon-system and
without touching anything of the host's.

* Its state survives the daemon: ``/run``, ``/var/lib/libvirt``,
  ``/var/cache/libvirt``, ``/var/log/libvirt`` and ``/etc/libvirt`` are
  directories under ``base/state`` bind-mounted in the daemon's namespace
  (not tmpfs), so a killed and restarted daemon finds its running QEMU
  processes again (QEMU outlives libvirtd).  Where such a directory does not
  exist on the host, its parent is covered with a tmpfs inside the namespace
  and the directory made there: nothing is created on the host.
* ``/etc/passwd`` and ``/etc/group`` are copies with the ``libvirt-qemu``
  user and the ``kvm``/``libvirt-qemu`` groups added (libvirtd 9.0 looks the
  user up before it reads ``qemu.conf``), bind-mounted in the namespace.
* ``qemu.conf``: QEMU runs as root, no relabelling (``dynamic_ownership``
  0, ``security_driver`` none), no cgroups, no namespaces, logs to files
  (no virtlogd).
* ``cgroups=("memory", ...)``: the qemu driver uses those cgroup v1
  controllers (``cgroup_controllers``), each guest in a cgroup of its own,
  all inside one cgroup this daemon gets under the test's own (removed on
  ``stop``), never at the top of the host's hierarchy.  The daemon runs in
  a cgroup namespace rooted there, with those hierarchies mounted afresh in
  its mount namespace, so libvirt's ``/machine`` is that cgroup's child;
  the hybrid layout's empty cgroup v2 mount (``/sys/fs/cgroup/unified``) is
  unmounted in its namespace: libvirt 9.0 would take it for a v2 backend
  and fail ("v2 controller '(null)' is not available").  ``cgroup_skip_reason``
  says why a host cannot do it.

Connect with ``qemu_uri`` (``qemu:///system?socket=...``).  ``stop()``
destroys the domains first (QEMU would outlive the daemon), then stops the
daemon and kills whatever QEMU process of this daemon is left, and waits
until they are gone.  A QEMU process is this daemon's when it lives in a
mount namespace one of its starts made: libvirt may give up on a QEMU that
is slow to die (a loaded machine) and remove its pid file all the same.

``LibvirtClient`` is a connection held by a child process of its own.  Tests
use it instead of ``libvirt.open`` in the pytest process: once some test has
registered an asyncio event-loop implementation with libvirt (process-wide,
for good), a plain connection opened outside that loop registers its socket
and keepalive timer on a loop that is closed, and libvirt's loop binding then
stays pinned to it - every later test that connects fails ("bound to another
asyncio loop that still has open libvirt connections").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping

from tests.helpers.private_libvirtd import PrivateLibvirtd, config_value

#: Where the daemon looks (left) and what it gets there (under base/state).
STATE_DIRS = (
    ("/run", "run"),
    ("/var/lib/libvirt", "lib"),
    ("/var/cache/libvirt", "cache"),
    ("/var/log/libvirt", "log"),
    ("/etc/libvirt", "etc"),
)

QEMU_CONF = {
    "user": "root",
    "group": "root",
    "dynamic_ownership": 0,
    "remember_owner": 0,
    "security_driver": "none",
    "cgroup_controllers": [],
    "namespaces": [],
    "stdio_handler": "file",
}

_QEMU_UID = 64055  # Debian's libvirt-qemu

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _v1_mounts() -> dict[str, Path]:
    """Mount point of each mounted cgroup v1 controller, by name."""
    mounts: dict[str, Path] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split(" - ", 1)
            if len(fields) != 2 or not fields[1].startswith("cgroup "):
                continue
            options = fields[1].split()[2].split(",")
            for option in options:
                mounts.setdefault(option, Path(fields[0].split()[4]))
    return mounts


def _own_v1_cgroups() -> dict[str, str]:
    """This process's cgroup in each v1 hierarchy, by controller name."""
    own: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(","):
                if controller:
                    own[controller] = path
    return own


def cgroup_skip_reason(cgroups: Iterable[str]) -> str | None:
    """Why a QemuLibvirtd cannot put its guests in cgroups of ``cgroups`` here, or None."""
    if os.geteuid() != 0:
        return "making cgroups for the daemon needs root"
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return ("this host has a pure cgroup v2 hierarchy; QemuLibvirtd's cgroups "
                "option handles cgroup v1 hierarchies only (on v2 the guests' cgroups need "
                "a parent with the controllers enabled for its children, which v2 allows "
                "only in a cgroup with no process of its own: not the test's, where the "
                "test process runs; not implemented)")
    mounts, own = _v1_mounts(), _own_v1_cgroups()
    for controller in cgroups:
        if controller not in mounts:
            return f"the cgroup v1 {controller} controller is not mounted here"
        if controller not in own:
            return f"this process is in no cgroup of the {controller} hierarchy"
        if not os.access(mounts[controller] / own[controller].lstrip("/"), os.W_OK):
            return f"this process's {controller} cgroup {own[controller]} is not writable"
    for tool in ("unshare", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} (util-linux) is not installed"
    return None


class QemuLibvirtd(PrivateLibvirtd):
    """A private ``qemu:///system`` daemon under ``base``."""

    def __init__(self, base: Path, *, qemu_config: Mapping[str, object] | None = None,
                 extra_config: Mapping[str, object] | None = None,
                 env: Mapping[str, str] | None = None,
                 cgroups: tuple[str, ...] = ()) -> None:
        # No tmpfs from the base class: our private directories are bind
        # mounts that outlive the daemon (see _command).
        super().__init__(base, private_dirs=(), driver_modules=("qemu",),
                         extra_config=extra_config, env=env)
        self.state_dir = self.base / "state"
        for _, name in STATE_DIRS:
            (self.state_dir / name).mkdir(parents=True, exist_ok=True)
        self._namespaces: set[str] = set()      # mount namespaces it ran in
        self.cgroups = tuple(cgroups)
        #: The daemon's own cgroup per controller (seen from the host), made here.
        self.cgroup_dirs: dict[str, Path] = {}
        if self.cgroups:
            reason = cgroup_skip_reason(self.cgroups)
            if reason is not None:
                raise RuntimeError(f"cannot run libvirtd with cgroups here: {reason}")
            mounts, own = _v1_mounts(), _own_v1_cgroups()
            tag = hashlib.sha256(str(self.base).encode()).hexdigest()[:8]
            name = f"mom-libvirtd-{os.getpid()}-{tag}"
            for controller in self.cgroups:
                directory = mounts[controller] / own[controller].lstrip("/") / name
                directory.mkdir(exist_ok=True)
                self.cgroup_dirs[controller] = directory
        settings = dict(QEMU_CONF)
        settings["cgroup_controllers"] = list(self.cgroups)
        settings.update(qemu_config or {})
        (self.state_dir / "etc" / "qemu.conf").write_text(
            "".join(f"{k} = {config_value(v)}\n" for k, v in settings.items()))
        self._write_accounts()

    # -- setup --

    def _write_accounts(self) -> None:
        passwd = Path("/etc/passwd").read_text()
        group = Path("/etc/group").read_text()
        users = {line.split(":", 1)[0] for line in passwd.splitlines() if line}
        groups = {line.split(":", 1)[0]: line for line in group.splitlines() if line}
        used_gids = {int(line.split(":")[2]) for line in groups.values()
                     if line.count(":") >= 3 and line.split(":")[2].isdigit()}
        if not passwd.endswith("\n"):
            passwd += "\n"
        if not group.endswith("\n"):
            group += "\n"
        if "kvm" not in groups:
            gid = next(g for g in range(990, 100, -1) if g not in used_gids)
            used_gids.add(gid)
            group += f"kvm:x:{gid}:libvirt-qemu\n"
        if "libvirt-qemu" not in groups:
            gid = _QEMU_UID if _QEMU_UID not in used_gids else \
                next(g for g in range(989, 100, -1) if g not in used_gids)
            group += f"libvirt-qemu:x:{gid}:libvirt-qemu\n"
            qemu_gid = gid
        else:
            qemu_gid = int(groups["libvirt-qemu"].split(":")[2])
        if "libvirt-qemu" not in users:
            passwd += (f"libvirt-qemu:x:{_QEMU_UID}:{qemu_gid}:Libvirt Qemu:"
                       f"/var/lib/libvirt:/usr/sbin/nologin\n")
        (self.state_dir / "passwd").write_text(passwd)
        (self.state_dir / "group").write_text(group)

    def _mount_script(self) -> str:
        steps: list[str] = []
        covered: set[str] = set()
        for target, name in STATE_DIRS:
            source = shlex.quote(str(self.state_dir / name))
            if not os.path.isdir(target):
                parent = os.path.dirname(target)
                if not os.path.isdir(parent):
                    raise FileNotFoundError(f"neither {target} nor {parent} exists")
                if parent not in covered:
                    covered.add(parent)
                    steps.append(f"mount -t tmpfs -o mode=0755 mom-test {shlex.quote(parent)}")
                steps.append(f"mkdir -p {shlex.quote(target)}")
            steps.append(f"mount --bind {source} {shlex.quote(target)}")
        for name in ("passwd", "group"):
            steps.append(f"mount --bind {shlex.quote(str(self.state_dir / name))} /etc/{name}")
        if self.cgroups:
            unified = CGROUP_ROOT / "unified"
            if os.path.ismount(unified):
                steps.append(f"umount {shlex.quote(str(unified))}")
            mounts = _v1_mounts()
            for controller in self.cgroups:
                # Mounted again inside the cgroup namespace: rooted at its root.
                where = shlex.quote(str(mounts[controller]))
                steps.append(f"umount {where}")
                steps.append(f"mount -t cgroup -o {controller} cgroup {where}")
        return "".join(f"{step} && " for step in steps)

    def _command(self) -> list[str]:
        command = super()._command()
        # The base class's isolated command is: unshare ... /bin/sh -c SCRIPT,
        # SCRIPT ending in "exec libvirtd ...": our mounts go first.
        if command[-3:-1] != ["/bin/sh", "-c"]:
            raise RuntimeError(f"unexpected libvirtd command line: {command}")
        command[-1] = self._mount_script() + command[-1]
        if not self.cgroups:
            return command
        # Into the daemon's cgroups first, then a cgroup namespace rooted
        # there (each exec keeps the pid: the Popen pid stays the daemon's).
        command.insert(1, "--cgroup")
        joins = "".join(f"echo $$ > {shlex.quote(str(d / 'cgroup.procs'))} && "
                        for d in self.cgroup_dirs.values())
        return ["/bin/sh", "-c", f"{joins}exec {shlex.join(command)}"]

    def qemu_cgroup(self, pid: int, controller: str) -> Path | None:
        """The directory of QEMU process ``pid``'s cgroup of ``controller``, seen
        from the host (None unless it is one of this daemon's)."""
        base = self.cgroup_dirs.get(controller)
        if base is None:
            return None
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
                _, controllers, path = line.split(":", 2)
                if controller in controllers.split(","):
                    directory = _v1_mounts()[controller] / path.lstrip("/")
                    return directory if base in directory.parents else None
        return None

    def _remove_cgroups(self) -> None:
        """Remove this daemon's cgroups (its guests' first), once they are empty."""
        for directory in self.cgroup_dirs.values():
            if not directory.is_dir():
                continue
            children = sorted((p for p in directory.rglob("*") if p.is_dir()),
                              key=lambda p: len(p.parts), reverse=True)
            for path in [*children, directory]:
                deadline = time.monotonic() + 10
                while True:
                    try:
                        path.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        # Processes still leaving (EBUSY): they go within moments.
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)

    # -- addresses --

    @property
    def qemu_uri(self) -> str:
        return f"qemu:///system?socket={self.socket_path}"

    @property
    def pid_dir(self) -> Path:
        """Where this daemon writes ``<domain>.pid`` (seen from the host)."""
        return self.state_dir / "run" / "libvirt" / "qemu"

    def qemu_pids(self) -> dict[str, int]:
        """Domain name -> pid of each live QEMU process of this daemon."""
        found: dict[str, int] = {}
        for pid_file in self.pid_dir.glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pid_file.read_text().strip())
                if _is_qemu(pid):
                    found[pid_file.stem] = pid
        return found

    def qemu_log(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.state_dir / "log" / "qemu" / f"{name}.log").read_text(errors="replace")
        return ""

    def own_qemu_processes(self) -> list[int]:
        """Every live QEMU process this daemon started, pid file or not."""
        found = set(self.qemu_pids().values())
        for pid, _ in qemu_processes():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/ns/mnt") in self._namespaces:
                    found.add(pid)
        return sorted(found)

    # -- life cycle --

    def start(self, timeout: float = 15.0) -> None:
        super().start(timeout)
        # QEMU runs in the daemon's mount namespace (qemu.conf: no namespaces
        # of its own), made by this start's unshare.
        with contextlib.suppress(OSError):
            self._namespaces.add(os.readlink(f"/proc/{self.pid}/ns/mnt"))

    def client(self, timeout: float = 60.0) -> "LibvirtClient":
        """A connection to this daemon, held by a child process (a daemon
        just started may first probe QEMU: slow on a loaded machine)."""
        return LibvirtClient(self.qemu_uri, timeout)

    def destroy_domains(self, timeout: float = 30.0) -> None:
        """Destroy every running domain through the daemon (if it runs)."""
        if self.pid is None:
            return
        try:
            with self.client() as client:
                client.destroy_all()
        except LibvirtCallError:
            return
        _wait_gone(self.own_qemu_processes(), timeout)

    def kill_leftover_qemu(self, timeout: float = 60.0) -> list[int]:
        """SIGKILL the QEMU processes this daemon started that still run, and
        wait until they are gone (a process giving back 512 MiB on a loaded
        machine may take seconds)."""
        pids = self.own_qemu_processes()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait_gone(pids, timeout)
        return pids

    def stop(self, timeout: float = 10.0) -> None:
        try:
            self.destroy_domains()
        finally:
            try:
                super().stop(timeout)
            finally:
                self.kill_leftover_qemu()
                if self.cgroups:
                    self._remove_cgroups()


def _is_qemu(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        exe = os.readlink(f"/proc/{pid}/exe")
    except (OSError, IndexError):
        return False
    return state != "Z" and "qemu" in os.path.basename(exe)


def _wait_gone(pids: Iterable[int], timeout: float) -> None:
    pending = list(pids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if _is_qemu(p)]
        if pending:
            time.sleep(0.05)


def qemu_processes() -> list[tuple[int, str]]:
    """(pid, command line) of every QEMU process on the host."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        pid = int(proc.name)
        if _is_qemu(pid):
            with contextlib.suppress(OSError):
                found.append((pid, (proc / "cmdline").read_bytes().replace(b"\0", b" ")
                              .decode(errors="replace")))
    return found


# --------------------------------------------------------------------------
# A libvirt connection in a process of its own


class LibvirtCallError(RuntimeError):
    """libvirt (or the worker process) failed; the message is libvirt's."""


class LibvirtClient:
    """The few libvirt calls the tests make, run by a child process.

    Each call is one JSON line each way (well under a millisecond), so it is
    fine for polling.  Domains are named by UUID.
    """

    def __init__(self, uri: str, timeout: float = 30.0) -> None:
        repo = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from tests.helpers.qemu_libvirtd import _serve; _serve()",
             uri], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=repo, env=env,
            text=True, bufsize=1)
        try:
            self._call("ping", timeout=timeout)
        except BaseException:
            self.close()
            raise

    def _call(self, op: str, *args: object, timeout: float = 30.0) -> object:
        if self.process.poll() is not None:
            raise LibvirtCallError(f"the libvirt worker exited ({self.process.returncode})")
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps([op, *args]) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise LibvirtCallError(f"libvirt call {op} took more than {timeout} s")
        line = self.process.stdout.readline()
        if not line:
            raise LibvirtCallError(f"the libvirt worker exited during {op}")
        ok, value = json.loads(line)
        if not ok:
            raise LibvirtCallError(value)
        return value

    def create(self, xml: str) -> str:
        """Start a transient domain; its UUID."""
        return self._call("create", xml, timeout=120)

    def memory_stats(self, uuid: str) -> dict[str, int]:
        return self._call("stats", uuid)

    def memory_parameters(self, uuid: str) -> dict[str, int]:
        """virDomainGetMemoryParameters: hard_limit, soft_limit, swap_hard_limit (KiB)."""
        return self._call("memory_parameters", uuid)

    def live_xml(self, uuid: str) -> str:
        """The running domain's live definition."""
        return self._call("xml", uuid)

    def set_stats_period(self, uuid: str, seconds: int) -> None:
        self._call("period", uuid, seconds)

    def block_io_tune(self, uuid: str, disk: str) -> dict[str, object]:
        """The disk's block I/O limits as libvirt reports them (blockIoTune, live)."""
        return self._call("block_io_tune", uuid, disk)

    def set_metadata(self, uuid: str, xml: str | None, key: str, namespace: str) -> None:
        """Replace (None: remove) the domain's live metadata element of ``namespace``."""
        self._call("set_metadata", uuid, xml, key, namespace)

    def scheduler_parameters(self, uuid: str) -> dict[str, int]:
        """The running domain's scheduler parameters (vcpu_quota, vcpu_period, ...)."""
        return self._call("sched", uuid)

    def domain_xml(self, uuid: str) -> str:
        """The running domain's live definition."""
        return self._call("xml", uuid)

    def destroy(self, uuid: str) -> None:
        """Destroy a domain (gone already: nothing to do)."""
        self._call("destroy", uuid)

    def destroy_all(self) -> int:
        return self._call("destroy_all", timeout=60)

    def domains(self) -> list[tuple[str, str, bool]]:
        """(name, UUID, active) of every domain."""
        return [tuple(d) for d in self._call("domains")]

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                assert self.process.stdin is not None
                self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> "LibvirtClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve() -> None:
    """The worker: one connection, one JSON request per line on stdin."""
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)  # errors come back as replies
    try:
        conn = libvirt.open(sys.argv[1])
    except libvirt.libvirtError as e:
        conn, refusal = None, f"cannot connect to {sys.argv[1]}: {e.get_error_message()}"

    def create(xml: str) -> str:
        return conn.createXML(xml, 0).UUIDString()

    def destroy(uuid: str) -> None:
        try:
            conn.lookupByUUIDString(uuid).destroy()
        except libvirt.libvirtError as e:
            if e.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN,
                                          libvirt.VIR_ERR_OPERATION_INVALID):
                raise

    def destroy_all() -> int:
        count = 0
        for dom in conn.listAllDomains():
            with contextlib.suppress(libvirt.libvirtError):
                persistent = dom.isPersistent()
                if dom.isActive():
                    dom.destroy()
                    count += 1
                if persistent:
                    dom.undefine()
        return count

    ops = {
        "ping": lambda: True,
        "create": create,
        "stats": lambda uuid: conn.lookupByUUIDString(uuid).memoryStats(),
        "memory_parameters": lambda uuid: conn.lookupByUUIDString(uuid).memoryParameters(),
        "period": lambda uuid, seconds: conn.lookupByUUIDString(uuid).setMemoryStatsPeriod(
            seconds, libvirt.VIR_DOMAIN_AFFECT_LIVE),
        "xml": lambda uuid: conn.lookupByUUIDString(uuid).XMLDesc(0),
        "block_io_tune": lambda uuid, disk: conn.lookupByUUIDString(uuid).blockIoTune(
            disk, libvirt.VIR_DOMAIN_AFFECT_LIVE),
        "set_metadata": lambda uuid, xml, key, ns: conn.lookupByUUIDString(uuid).setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, key if xml else None, ns,
            libvirt.VIR_DOMAIN_AFFECT_LIVE),
        "sched": lambda uuid: conn.lookupByUUIDString(uuid).schedulerParameters(),
        "destroy": destroy,
        "destroy_all": destroy_all,
        "domains": lambda: [[d.name(), d.UUIDString(), bool(d.isActive())]
                            for d in conn.listAllDomains()],
    }
    try:
        for line in sys.stdin:
            op, *args = json.loads(line)
            try:
                if conn is None:
                    raise LibvirtCallError(refusal)
                reply = [True, ops[op](*args)]
            except libvirt.libvirtError as e:
                reply = [False, f"{op}: {e.get_error_message()}"]
            except LibvirtCallError as e:
                reply = [False, str(e)]
            except Exception as e:  # noqa: BLE001 - every failure goes back to the caller
                reply = [False, f"{op}: {type(e).__name__}: {e}"]
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()
