"""A real systemd (252 on Debian 12) as PID 1 in namespaces, for system tests.

The machine itself is never changed.  systemd boots inside ``unshare --fork
--pid --mount --net --uts --ipc --cgroup --mount-proc`` on overlay mounts
over ``/usr``, ``/etc`` and ``/var``, whose upper directories are in a
temporary folder; ``/run``, ``/tmp`` and ``/dev`` are fresh tmpfs mounts
(``/dev`` holds bind mounts of the few harmless device nodes, a private
devpts and its own ``/dev/shm``); ``/sys`` and ``/proc/sys`` are read-only
but for the KSM knobs momd writes and the network namespace's own sysctls;
``/sys/fs/cgroup`` is the cgroup2 of a cgroup namespace whose root is a
cgroup made for this host (``--cgroup`` is not in the issue's list: without
it systemd would take over the machine's own cgroup tree).  Units that would
touch the kernel, the console, the clock or the services shared with the
machine are masked (``MASKED_UNITS`` says why for each).  ``nsenter`` runs
commands in it.

Between the machine's own files and the per-host upper directories lies a
second lower layer, prepared once and cached in ``~/.cache/mom-tests`` (or
``$MOM_TEST_CACHE``) like the e2e guest image: the Debian packages momd needs
at run time (``scripts/install-deps.sh --runtime``, so the list is that of
``make install`` and of the ``.deb``'s ``Depends:``) and
``libvirt-daemon-system``, installed with ``apt-get`` in a mount namespace
that still has the network, with a ``policy-rc.d`` that starts nothing.  The
layer is named after a hash of what it depends on (the machine's dpkg
database, ``debian/control``, ``scripts/install-deps.sh`` and the preparation
script below), built in a staging directory and renamed into place, so a
half-built layer is never used, and reused until one of those changes.

Shutting down powers systemd off, kills whatever is left through the cgroup
(``cgroup.kill``), removes the cgroups and the temporary folder: the mounts
lived only in the host's mount namespace and go with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

from tests.helpers.guest_image import cache_dir, cache_lock

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = Path("/lib/systemd/systemd")
#: Where the checkout is seen inside the host: a bind mount, so that a clone
#: under /tmp (hidden by the host's own /tmp) or /root works the same.
SOURCE_MOUNT = "/run/mom-source"
#: Besides momd's run-time packages: the system libvirtd momd talks to, and
#: gdbus (whose errors keep their D-Bus name, unlike busctl's).
EXTRA_PACKAGES = ("libvirt-daemon-system", "libglib2.0-bin")
#: An administrator's root shell: no pyenv, no venv, no test bus address.
CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "DEBIAN_FRONTEND": "noninteractive",
}

#: Units that would act on what the host shares with the machine (its kernel,
#: console, clock, disks) or that fail in a container, each with the reason.
MASKED_UNITS = {
    # The kernel's tunables, binfmt table and modules are the machine's.
    "systemd-sysctl.service": "writes /proc/sys of the shared kernel",
    "systemd-binfmt.service": "registers binfmt_misc formats in the shared kernel",
    "proc-sys-fs-binfmt_misc.automount": "mounts the shared binfmt_misc",
    "proc-sys-fs-binfmt_misc.mount": "mounts the shared binfmt_misc",
    "systemd-modules-load.service": "loads kernel modules",
    "kmod-static-nodes.service": "creates device nodes for modules",
    # udev: the machine's devices, its uevents and its hwdb.
    "systemd-udevd.service": "manages the machine's devices",
    "systemd-udevd-control.socket": "udevd",
    "systemd-udevd-kernel.socket": "udevd (kernel uevents)",
    "systemd-udev-trigger.service": "replays every uevent of the machine",
    "systemd-udev-settle.service": "waits for udevd",
    "systemd-hwdb-update.service": "rebuilds the machine's hwdb",
    # The root file system, the clock, firmware stores, entropy.
    "systemd-remount-fs.service": "remounts the shared root file system",
    "systemd-fsck-root.service": "checks the shared root file system",
    "systemd-timesyncd.service": "sets the shared clock",
    "systemd-pstore.service": "empties the machine's /sys/fs/pstore",
    "systemd-random-seed.service": "seeds the shared kernel's entropy pool",
    # Nothing to log in on, no console of its own.
    "getty.target": "gettys on the machine's terminals",
    "console-getty.service": "a getty on the console",
    # The machine's own services and timers, enabled in the /etc it shares.
    "timers.target": "apt, man-db, fstrim, e2scrub ... on the machine's disks",
    "e2scrub_reap.service": "e2scrub on the machine's disks",
    "postgresql.service": "a database of the machine's (enabled in its /etc)",
    # At poweroff it shuts guests down and waits minutes for a busybox guest
    # that ignores ACPI; the tests destroy their guests themselves.
    "libvirt-guests.service": "waits up to 5 min per guest at poweroff",
}

# Runs in a new mount namespace with the network; $1 = upper dirs, $2 = work
# dirs, $3 = the checkout.  apt's downloads go to the tmpfs, not the layer.
PREPARE_SCRIPT = r"""set -eu
upper=$1 work=$2 src=$3
shift 3
for d in usr etc var; do
    mkdir -p "$upper/$d" "$work/$d"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$upper/$d,workdir=$work/$d" "/$d"
done
mkdir -p /run/mom-prepare-src
mount --bind "$src" /run/mom-prepare-src
mount -t tmpfs -o mode=1777 tmpfs /tmp
printf '#!/bin/sh\n# mom system tests: nothing starts while the layer is prepared\nexit 101\n' \
    >/usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
export DEBIAN_FRONTEND=noninteractive
mkdir -p /tmp/archives/partial
printf 'Dir::Cache::Archives "/tmp/archives";\nDPkg::Lock::Timeout "600";\n' \
    >/etc/apt/apt.conf.d/00mom-prepare
bash /run/mom-prepare-src/scripts/install-deps.sh --runtime
missing=
for p in "$@"; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt-get install -y -q --no-install-recommends $missing || {
        apt-get update -q && apt-get install -y -q --no-install-recommends $missing; }
fi
rm -f /usr/sbin/policy-rc.d /etc/apt/apt.conf.d/00mom-prepare
"""

# PID 1 of the new namespaces until it becomes systemd.  $1 = lower layer,
# $2 = this host's folder, $3 = the checkout; then the units to mask.
INIT_SCRIPT = r"""set -eu
layer=$1 dir=$2 src=$3
shift 3
for d in usr etc var; do
    mkdir -p "$dir/upper/$d" "$dir/work/$d"
    mount -t overlay overlay \
        -o "lowerdir=$layer/$d:/$d,upperdir=$dir/upper/$d,workdir=$dir/work/$d" "/$d"
done
# /dev of its own: a tmpfs with the harmless nodes, not the machine's devtmpfs.
dev=$dir/dev
mkdir -p "$dev"
mount -t tmpfs -o mode=755,nosuid tmpfs "$dev"
for n in null zero full random urandom tty kvm net/tun; do
    [ -e "/dev/$n" ] || continue
    mkdir -p "$dev/$(dirname "$n")"
    touch "$dev/$n"
    mount --bind "/dev/$n" "$dev/$n"
done
mkdir "$dev/pts" "$dev/shm" "$dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$dev/pts"
ln -s pts/ptmx "$dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$dev/shm"
ln -s /proc/self/fd "$dev/fd"
ln -s /proc/self/fd/0 "$dev/stdin"
ln -s /proc/self/fd/1 "$dev/stdout"
ln -s /proc/self/fd/2 "$dev/stderr"
touch "$dev/console"
mount --bind "$dir/console.log" "$dev/console"
mount --move "$dev" /dev
# /sys read-only but for the KSM knobs; the cgroup namespace's own cgroup2.
if [ -d /sys/kernel/mm/ksm ]; then
    mount --bind /sys/kernel/mm/ksm /sys/kernel/mm/ksm
fi
# Every mount under /sys too (debugfs, tracefs, ...): all the machine's.
for m in $(findmnt -R -n -l -o TARGET /sys | sort -r); do
    [ "$m" = /sys/kernel/mm/ksm ] || mount -o remount,bind,ro "$m"
done
if [ -d /sys/kernel/mm/ksm ]; then
    mount -o remount,bind,rw /sys/kernel/mm/ksm
fi
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
# The fresh /proc is the shared kernel's too: its tunables read-only (as
# systemd-nspawn does), /proc/sys/net excepted, which belongs to the new
# network namespace.
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount --bind /proc/sys/net /proc/sys/net
mount -o remount,bind,rw /proc/sys/net
if [ -e /proc/sysrq-trigger ]; then
    mount --bind /proc/sysrq-trigger /proc/sysrq-trigger
    mount -o remount,bind,ro /proc/sysrq-trigger
fi
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/mom-source
mount --bind "$src" /run/mom-source
mount -o remount,bind,ro /run/mom-source
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /etc/systemd/system
for unit in "$@"; do
    ln -sf /dev/null "/etc/systemd/system/$unit"
done
export container=mom-test
exec /lib/systemd/systemd --log-level=info
"""


class SystemdHostError(RuntimeError):
    """The systemd host could not be prepared or booted (the message says why)."""


def skip_reason() -> str | None:
    """Why a systemd host cannot run here at all, or None."""
    if os.geteuid() != 0:
        return "a systemd host in namespaces needs root"
    for tool in ("unshare", "nsenter", "apt-get", "dpkg-query"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not SYSTEMD.exists():
        return f"{SYSTEMD} is absent: systemd is not installed"
    if _cgroup2_mount() is None:
        return "no cgroup2 file system is mounted (systemd needs one)"
    return _namespaces_refused()


def _namespaces_refused() -> str | None:
    """Why the namespaces and an overlay in the cache cannot be made (a
    container without the privilege, a cache on overlayfs), or None."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".probe-") as tmp:
        for d in ("upper", "work", "mnt"):
            os.mkdir(os.path.join(tmp, d))
        script = (f"mount -t overlay overlay -o lowerdir=/usr,upperdir={tmp}/upper,"
                  f"workdir={tmp}/work {tmp}/mnt")
        result = _run(["unshare", "--fork", "--pid", "--mount", "--propagation", "private",
                       "--net", "--uts", "--ipc", "--cgroup", "--mount-proc",
                       "sh", "-c", script], timeout=60)
    if result.returncode != 0:
        return f"cannot make the namespaces and overlays a systemd host needs here: " \
               f"{result.stderr.strip()}"
    return None


def _cgroup2_mount() -> Path | None:
    """Where the machine's cgroup2 hierarchy is mounted (its root), or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup2" and fields[3] == "/":
                return Path(fields[4])
    return None


def _run(argv: Sequence[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, **kwargs)


# --------------------------------------------------------------------------
# The cached lower layer


def _layer_key(packages: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for part in (PREPARE_SCRIPT, " ".join(packages)):
        digest.update(part.encode() + b"\0")
    for path in (Path("/var/lib/dpkg/status"), REPO / "debian" / "control",
                 REPO / "scripts" / "install-deps.sh"):
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def ensure_layer(cache: Path | None = None,
                 packages: Sequence[str] = EXTRA_PACKAGES) -> tuple[Path, bool]:
    """The prepared lower layer (usr, etc, var) and whether it had to be built."""
    cache = Path(cache) if cache is not None else cache_dir()
    with cache_lock(cache):
        final = cache / f"systemd-layer-{_layer_key(packages)}"
        built = False
        if not (final / "complete").exists():
            staging = Path(tempfile.mkdtemp(dir=cache, prefix=".systemd-layer-"))
            try:
                upper, work = staging / "layer", staging / "work"
                result = _run(["unshare", "--mount", "--propagation", "private", "--fork",
                               "bash", "-c", PREPARE_SCRIPT, "prepare",
                               str(upper), str(work), str(REPO), *packages], timeout=1800)
                if result.returncode != 0:
                    raise SystemdHostError(
                        f"preparing the systemd host layer failed ({result.returncode}):\n"
                        f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
                (upper / "complete").write_text(" ".join(packages) + "\n")
                if final.exists():
                    shutil.rmtree(final)
                os.replace(upper, final)
                built = True
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        os.utime(final / "complete")  # in use from now on: see _prune_layers
        _prune_layers(cache, keep=final)
    return final, built


@contextlib.contextmanager
def layer_in_use(layer: Path) -> Iterator[None]:
    """Keep ``layer`` from being pruned while a host has it mounted (another
    checkout's run may build a newer one meanwhile)."""
    fd = os.open(layer / "complete", os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


#: A layer handed out this recently may be about to be mounted (between
#: ensure_layer and the boot's layer_in_use): not pruned yet.
PRUNE_AFTER_SECONDS = 3600


def _prune_layers(cache: Path, keep: Path) -> None:
    """Drop layers of earlier package sets, but none that a host uses or may use."""
    for old in cache.glob("systemd-layer-*"):
        if old == keep:
            continue
        try:
            fd = os.open(old / "complete", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            shutil.rmtree(old, ignore_errors=True)  # never completed
            continue
        if time.time() - os.fstat(fd).st_mtime < PRUNE_AFTER_SECONDS:
            os.close(fd)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        else:
            shutil.rmtree(old, ignore_errors=True)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------
# The booted host


class SystemdHost:
    """systemd booted as PID 1 on ``layer``, its changes kept under ``directory``."""

    def __init__(self, layer: Path, directory: Path) -> None:
        self.layer = Path(layer)
        self.directory = Path(directory)
        self.cgroup: Path | None = None
        self.launcher: subprocess.Popen | None = None
        self.pid: int | None = None
        self.boot_seconds: float | None = None
        self._in_use = contextlib.ExitStack()

    # --- life cycle -------------------------------------------------------

    def boot(self, timeout: float = 180) -> None:
        """Boot and wait until systemd reports ``running`` (not ``degraded``)."""
        started = time.monotonic()
        try:
            self._start()
            self.pid = self._wait_for_pid1(timeout)
            state = self._wait_until_booted(started + timeout)
            if state != "running":
                failed = self.run(["systemctl", "--failed", "--no-legend"], check=False).stdout
                raise SystemdHostError(f"the host booted {state!r}; failed units:\n{failed}")
        except BaseException:
            self.shutdown()
            raise
        self.boot_seconds = time.monotonic() - started

    def _start(self) -> None:
        self._in_use.enter_context(layer_in_use(self.layer))
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "console.log").touch()
        root = _cgroup2_mount()
        if root is None:
            raise SystemdHostError("no cgroup2 mount")
        self.cgroup = Path(tempfile.mkdtemp(dir=root, prefix="mom-test-"))
        # The launcher joins the cgroup before unshare makes it the root of
        # the new cgroup namespace; systemd then owns everything below.
        launch = (f'echo $$ >{shlex.quote(str(self.cgroup / "cgroup.procs"))} && '
                  'exec unshare --fork --pid --mount --propagation private --net --uts '
                  '--ipc --cgroup --mount-proc bash -c "$0" init "$@"')
        with open(self.directory / "launcher.log", "ab") as log:
            self.launcher = subprocess.Popen(
                ["bash", "-c", launch, INIT_SCRIPT, str(self.layer), str(self.directory),
                 str(REPO), *MASKED_UNITS],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={"PATH": CLEAN_ENV["PATH"]}, start_new_session=True)

    def _wait_for_pid1(self, timeout: float) -> int:
        assert self.launcher is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.launcher.poll() is not None:
                raise SystemdHostError(f"the host did not boot:\n{self.launcher_log()}")
            children = Path(f"/proc/{self.launcher.pid}/task/{self.launcher.pid}/children")
            with contextlib.suppress(OSError):
                for pid in children.read_text().split():
                    if Path(f"/proc/{pid}/exe").resolve() == SYSTEMD.resolve():
                        return int(pid)
            time.sleep(0.05)
        raise SystemdHostError(f"systemd did not start in {timeout} s:\n{self.launcher_log()}")

    def _wait_until_booted(self, deadline: float) -> str:
        state = ""
        while time.monotonic() < deadline:
            result = self.run(["systemctl", "is-system-running", "--wait"], check=False,
                              timeout=max(1.0, deadline - time.monotonic()))
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                return state
            time.sleep(0.2)
        raise SystemdHostError(f"the host is still {state!r}")

    def launcher_log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.directory / "launcher.log").read_text(errors="replace")
        return ""

    def shutdown(self, timeout: float = 90) -> None:
        """Power off, kill what is left, remove the cgroups and the folder."""
        if self.launcher is not None and self.launcher.poll() is None and self.pid:
            with contextlib.suppress(ProcessLookupError):
                # systemd's "poweroff" signal; in a container it then exits.
                os.kill(self.pid, signal.SIGRTMIN + 4)
            try:
                self.launcher.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.cgroup is not None and self.cgroup.exists():
            with contextlib.suppress(OSError):
                (self.cgroup / "cgroup.kill").write_text("1\n")
            deadline = time.monotonic() + 30
            while self._cgroup_pids() and time.monotonic() < deadline:
                time.sleep(0.1)
        if self.launcher is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.launcher.pid, signal.SIGKILL)
            self.launcher.wait()
        if self.cgroup is not None and self.cgroup.exists():
            for sub in sorted(self.cgroup.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if sub.is_dir():
                    with contextlib.suppress(OSError):
                        sub.rmdir()
            with contextlib.suppress(OSError):
                self.cgroup.rmdir()
        self.pid = None
        self._in_use.close()

    def _cgroup_pids(self) -> list[int]:
        if self.cgroup is None or not self.cgroup.exists():
            return []
        pids: list[int] = []
        for procs in self.cgroup.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids += [int(p) for p in procs.read_text().split()]
        return pids

    def leftovers(self) -> list[str]:
        """What is left of this host on the machine: processes, cgroups, mounts."""
        left: list[str] = []
        if self.launcher is not None and self.launcher.poll() is None:
            left.append(f"launcher {self.launcher.pid} still running")
        if self.cgroup is not None and self.cgroup.exists():
            left.append(f"cgroup {self.cgroup} (pids {self._cgroup_pids()})")
        with open("/proc/self/mountinfo") as f:
            for line in f:
                if str(self.directory) in line or str(self.layer) in line:
                    left.append(f"mount: {line.strip()}")
        return left

    # --- inside -----------------------------------------------------------

    def run(self, argv: Sequence[str], *, user: str | None = None, check: bool = True,
            timeout: float = 120, input: str | None = None,
            cwd: str = "/") -> subprocess.CompletedProcess:
        """Run ``argv`` inside the host (all its namespaces), as root or ``user``."""
        if self.pid is None:
            raise SystemdHostError("the host is not running")
        env = [f"{k}={v}" for k, v in CLEAN_ENV.items()]
        inner = list(argv)
        if user is not None:
            inner = ["runuser", "-u", user, "--", *inner]
        # Not nsenter --wd: it resolves the folder outside the mount namespace.
        command = ["nsenter", "-t", str(self.pid), "-a", "env", "-i", "-C", cwd, *env, *inner]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise SystemdHostError(
                f"{shlex.join(inner)} failed ({result.returncode}):\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result

    def path(self, path: str) -> Path:
        """``path`` inside the host, as seen from the machine (through PID 1's root)."""
        return Path(f"/proc/{self.pid}/root") / path.lstrip("/")

    def show(self, unit: str, prop: str) -> str:
        return self.run(["systemctl", "show", "-P", prop, unit]).stdout.strip()

    def journal(self, *matches: str, unit: str | None = None) -> list[dict]:
        """This boot's journal entries (JSON) for ``journalctl [-u unit] MATCH...``."""
        argv = ["journalctl", "--no-pager", "-o", "json", "-b"]
        if unit:
            argv += ["-u", unit]
        out = self.run([*argv, *matches], check=False).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def wait_for(self, what: str, predicate, timeout: float = 120, interval: float = 0.5):
        """Wait until ``predicate()`` is truthy and return it (never a timed assertion:
        the deadline is only there so a broken host fails instead of hanging)."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = predicate()
            if last:
                return last
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {what} after {timeout} s (last: {last!r})")
            time.sleep(interval)
