"""A tiny real guest for end-to-end tests: Debian's kernel and a busybox initramfs.

The guest is booted directly (``<kernel>``/``<initrd>``): no disk, no
network.  Its kernel comes from the package ``linux-image-amd64`` depends on
(downloaded with ``apt-get download``, unpacked, never installed); its
initramfs is built here from the host's ``busybox-static`` and the virtio
modules of that kernel.  The guest's ``/init`` mounts proc/sys/dev, loads the
virtio balloon driver (its modules in dependency order: the package has no
``modules.dep`` in the initramfs, busybox ``insmod`` takes plain ``.ko``
files, so compressed modules are decompressed when the image is built),
optionally dirties ``mom_dirty_mib`` MiB of memory in a tmpfs (kernel command
line), then prints its own ``MemTotal`` to the serial console every second::

    MOMTEST MemTotal: 497456 kB

With ``guest_agent=True`` (default off: the default image and its hash stay
as they are) the initramfs also holds Debian's ``qemu-ga`` from the package
``qemu-guest-agent`` (unpacked, never installed) with the shared libraries
``ldd`` finds for it on this host, and the ``virtio_console`` module; /init
then starts the agent on the virtio-serial port named
``org.qemu.guest_agent.0`` (``domain_xml(guest_agent=True)`` adds that
channel) and skips the balloon driver when the kernel command line says
``mom_no_balloon`` (``domain_xml(balloon_driver=False)``).

With ``virtio_mem=True`` (default off too) the initramfs also holds the
``virtio_mem`` module, which /init loads after the others;
``domain_xml(virtio_mem_mib=...)`` gives the guest a virtio-mem device and
the kernel command line that onlines what it plugs.

Both artifacts are cached between runs, outside the repository
(``$MOM_TEST_CACHE`` or ``~/.cache/mom-tests``): the kernel under its package
name and version, the initramfs under a hash of everything that goes into it.
Building is serialized with a lock file, so concurrent runs share the work.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from xml.sax.saxutils import escape

from tests.helpers.file_lock import flock_within

KERNEL_META_PACKAGE = "linux-image-amd64"
#: The balloon driver and what it needs, in load order.
VIRTIO_MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev",
                  "virtio_pci_legacy_dev", "virtio_pci", "virtio_balloon")
BUSYBOX_PATHS = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
QEMU_PATHS = ("qemu-system-x86_64", "/usr/bin/qemu-system-x86_64", "/usr/libexec/qemu-kvm")
MARK = "MOMTEST"

INIT_SCRIPT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "{MARK} init started"
for m in {' '.join(VIRTIO_MODULES)}; do
    insmod /lib/modules/$m.ko || echo "{MARK} insmod $m failed"
done
echo "{MARK} modules loaded"
dirty=$(sed -n 's/.*mom_dirty_mib=\\([0-9][0-9]*\\).*/\\1/p' /proc/cmdline)
if [ -n "$dirty" ] && [ "$dirty" -gt 0 ]; then
    mount -t tmpfs -o size=$((dirty + 8))m dirty /tmp
    dd if=/dev/zero of=/tmp/dirty bs=1M count=$dirty 2>/dev/null
    echo "{MARK} dirtied $dirty MiB"
fi
echo "{MARK} ready"
while :; do
    echo "{MARK} $(grep MemTotal /proc/meminfo)"
    sleep 1
done
"""


AGENT_PACKAGE = "qemu-guest-agent"
AGENT_BINARY = "usr/sbin/qemu-ga"
AGENT_PORT_NAME = "org.qemu.guest_agent.0"
#: Modules the agent variant adds: the virtio-serial driver, for the agent's port.
AGENT_MODULES = {"virtio_console": "drivers/char"}
#: Modules the virtio-mem variant adds (it needs only virtio and virtio_ring).
VIRTIO_MEM_MODULES = {"virtio_mem": "drivers/virtio"}

# The agent variant of /init: the balloon driver may be skipped, and the
# agent runs on its port (named by the host; the kernel learns the name
# shortly after the port appears, hence the wait).
_BALLOON_INSMOD = "    insmod /lib/modules/$m.ko || "
_AGENT_INSMOD = ('    case "$m" in virtio_balloon) grep -q mom_no_balloon /proc/cmdline '
                 f'&& {{ echo "{MARK} no balloon driver"; continue; }};; esac\n' + _BALLOON_INSMOD)
_AGENT_START = f"""insmod /lib/modules/virtio_console.ko || echo "{MARK} insmod virtio_console failed"
port=""
for attempt in 1 2 3 4 5 6 7 8 9 10; do
    for d in /sys/class/virtio-ports/*; do
        [ "$(cat $d/name 2>/dev/null)" = "{AGENT_PORT_NAME}" ] && port=/dev/${{d##*/}}
    done
    [ -n "$port" ] && [ -e "$port" ] && break
    sleep 1
done
if [ -n "$port" ]; then
    mkdir -p /run /var/run /tmp/qga
    /bin/qemu-ga -m virtio-serial -p "$port" -t /tmp/qga &
    echo "{MARK} agent started on $port"
else
    echo "{MARK} no agent port"
fi
echo "{MARK} ready"
"""


def _init_script(guest_agent: bool, virtio_mem: bool = False) -> str:
    script = INIT_SCRIPT
    if guest_agent:
        ready = f'echo "{MARK} ready"\n'
        assert _BALLOON_INSMOD in script and ready in script
        script = script.replace(_BALLOON_INSMOD, _AGENT_INSMOD).replace(ready, _AGENT_START)
    if virtio_mem:
        loaded = f'echo "{MARK} modules loaded"\n'
        assert loaded in script
        script = script.replace(loaded, 'insmod /lib/modules/virtio_mem.ko || '
                                f'echo "{MARK} insmod virtio_mem failed"\n' + loaded)
    return script


class GuestImageError(RuntimeError):
    """The guest image cannot be made on this host (the message says why)."""


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    kernel_package: str
    kernel_version: str


# --------------------------------------------------------------------------
# Host checks


def find_qemu() -> str | None:
    for candidate in QEMU_PATHS:
        found = shutil.which(candidate) if "/" not in candidate else \
            (candidate if os.access(candidate, os.X_OK) else None)
        if found:
            return found
    return None


def find_static_busybox() -> Path | None:
    """A statically linked busybox (``busybox-static``), or None."""
    for path in BUSYBOX_PATHS:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if data[:4] == b"\x7fELF" and _elf_is_static(data):
            return path
    return None


def _elf_is_static(data: bytes) -> bool:
    """No PT_INTERP program header (64-bit little-endian ELF only)."""
    if data[4] != 2 or data[5] != 1:
        return False
    phoff = int.from_bytes(data[32:40], "little")
    phentsize = int.from_bytes(data[54:56], "little")
    phnum = int.from_bytes(data[56:58], "little")
    for i in range(phnum):
        start = phoff + i * phentsize
        if int.from_bytes(data[start:start + 4], "little") == 3:  # PT_INTERP
            return False
    return True


def domain_type() -> str:
    """``kvm`` only where the CPU virtualizes for real; ``qemu`` (TCG) otherwise.

    A software KVM (``kvm_pvm``, in nested sandboxes without vmx/svm) does
    not boot a stock kernel, so it counts as no KVM.
    """
    if not os.path.exists("/dev/kvm"):
        return "qemu"
    try:
        flags = set()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
    except OSError:
        return "qemu"
    if not flags & {"vmx", "svm"}:
        return "qemu"
    if Path("/sys/module/kvm_pvm").exists():
        return "qemu"
    with contextlib.suppress(OSError):
        if re.search(r"^kvm_pvm\s", Path("/proc/modules").read_text(), re.M):
            return "qemu"
    return "kvm"


def skip_reason() -> str | None:
    """Why this host cannot boot the test guest at all, or None."""
    if os.geteuid() != 0:
        return "booting QEMU guests under a private libvirtd needs root"
    if find_qemu() is None:
        return "qemu-system-x86_64 is not installed (make deps installs qemu-system-x86)"
    if find_static_busybox() is None:
        return "no static busybox for the guest initramfs (make deps installs busybox-static)"
    return None


# --------------------------------------------------------------------------
# The cache


def cache_dir() -> Path:
    configured = os.environ.get("MOM_TEST_CACHE")
    if configured:
        return Path(configured)
    return Path(os.path.expanduser("~")) / ".cache" / "mom-tests"


@contextlib.contextmanager
def cache_lock(directory: Path, timeout: float = 600.0) -> Iterator[None]:
    """The cache's build lock: one process builds, the others wait and reuse."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        flock_within(fd, timeout, f"{directory}/.lock", interval=0.2)
        yield
    finally:
        os.close(fd)


def _run(argv: list[str], timeout: float = 300.0, **kwargs) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        raise GuestImageError(f"{' '.join(argv)} failed ({result.returncode}): "
                              f"{result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def kernel_package() -> tuple[str, str]:
    """(package, version) of the kernel ``linux-image-amd64`` depends on."""
    out = _run(["apt-cache", "depends", KERNEL_META_PACKAGE], timeout=60)
    names = re.findall(r"^\s*Depends:\s*(linux-image-\S+)", out, re.M)
    if not names:
        raise GuestImageError(f"{KERNEL_META_PACKAGE} depends on no linux-image package:\n{out}")
    package = names[0]
    return package, _package_version(package)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+_-]", "_", text)


def _kernel_dir(cache: Path, package: str, version: str) -> Path:
    return cache / f"kernel-{package}_{_safe(version)}"


def unpack_package(package: str, version: str, work: Path) -> Path:
    """Download ``package`` = ``version`` into ``work`` (apt-get download, never
    installed) and unpack it there; returns the unpacked tree.
    GuestImageError when either step fails."""
    _run(["apt-get", "download", "-q", f"{package}={version}"], cwd=work)
    debs = list(work.glob("*.deb"))
    if len(debs) != 1:
        raise GuestImageError(f"apt-get download left {debs} in {work}")
    unpacked = work / "root"
    _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)])
    return unpacked


def _cached_unpack(final: Path, package: str, version: str,
                   stage: Callable[[Path, Path], None]) -> Path:
    """``final``, made once: ``package`` = ``version`` downloaded and unpacked
    in a scratch directory of the cache, ``stage(unpacked, staging)`` picks
    what is kept into ``staging``, which then becomes ``final`` at once."""
    if (final / "complete").exists():
        return final
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".fetch-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # apt's sandbox user may write here
        unpacked = unpack_package(package, version, work)
        staging = work / "out"
        staging.mkdir()
        stage(unpacked, staging)
        (staging / "complete").write_text(f"{package} {version}\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    return final


def _fetch_kernel(cache: Path, package: str, version: str) -> Path:
    """Download and unpack the kernel and the virtio modules (cached)."""
    def stage(unpacked: Path, staging: Path) -> None:
        kernels = sorted(unpacked.glob("boot/vmlinuz-*"))
        if not kernels:
            raise GuestImageError(f"{package} {version} holds no /boot/vmlinuz-*")
        (staging / "modules").mkdir()
        shutil.copy2(kernels[0], staging / "vmlinuz")
        _stage_modules(unpacked, staging / "modules",
                       {name: "drivers/virtio" for name in VIRTIO_MODULES})
    return _cached_unpack(_kernel_dir(cache, package, version), package, version, stage)


def _stage_modules(unpacked: Path, into: Path, modules: dict[str, str]) -> None:
    """Modules by name -> their directory under ``kernel/``, decompressed."""
    for name, where in modules.items():
        found = sorted(unpacked.glob(f"lib/modules/*/kernel/{where}/{name}.ko*"))
        if found:  # else built into the kernel: nothing to load (insmod fails harmlessly)
            (into / f"{name}.ko").write_bytes(_decompressed(found[0]))


def _package_version(package: str) -> str:
    show = _run(["apt-cache", "show", "--no-all-versions", package], timeout=60)
    version = re.search(r"^Version:\s*(\S+)", show, re.M)
    if version is None:
        raise GuestImageError(f"no version for {package}:\n{show}")
    return version.group(1)


def _fetch_extra_modules(cache: Path, package: str, version: str,
                         modules: dict[str, str]) -> Path:
    """Modules of the kernel package beyond the virtio ones, by name ->
    directory under ``kernel/`` (cached, decompressed)."""
    key = hashlib.sha256(repr(sorted(modules.items())).encode()).hexdigest()[:8]
    return _cached_unpack(cache / f"modules-{package}_{_safe(version)}-{key}", package,
                          version, lambda unpacked, staging: _stage_modules(
                              unpacked, staging, modules))


def _shared_libraries(binary: Path) -> dict[str, bytes]:
    """What ``binary`` needs to run, as ``ldd`` finds it on this host:
    path in the guest (the loader's name for it) -> the file's content."""
    out = _run(["ldd", str(binary)], timeout=60)
    if "not found" in out:
        raise GuestImageError(f"{binary.name} needs libraries this host lacks:\n{out}")
    libraries: dict[str, bytes] = {}
    for line in out.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            path = Path(match.group(1))
            libraries[str(path).lstrip("/")] = path.resolve().read_bytes()
    return libraries


def _fetch_agent(cache: Path) -> Path:
    """Debian's qemu-ga, unpacked from its package (cached by version)."""
    try:
        version = _package_version(AGENT_PACKAGE)
    except (GuestImageError, OSError, subprocess.TimeoutExpired) as e:
        cached = sorted(cache.glob("agent-*/complete"), key=lambda p: p.stat().st_mtime)
        if not cached:
            raise GuestImageError(f"cannot find {AGENT_PACKAGE}: {e}") from e
        return cached[-1].parent
    return _cached_unpack(cache / f"agent-{AGENT_PACKAGE}_{_safe(version)}", AGENT_PACKAGE,
                          version, lambda unpacked, staging: shutil.copy2(
                              unpacked / AGENT_BINARY, staging / "qemu-ga"))


def agent_binary(cache: Path | None = None) -> Path:
    """Debian's qemu-ga, unpacked in the cache (for tests that run it on the
    host, on a UNIX socket); GuestImageError when it cannot be had."""
    cache = Path(cache) if cache is not None else cache_dir()
    with cache_lock(cache):
        binary = _fetch_agent(cache) / "qemu-ga"
    _shared_libraries(binary)  # GuestImageError when this host lacks one
    return binary


def _decompressed(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        zstd = shutil.which("zstd")
        if zstd is None:
            raise GuestImageError(f"{path.name} is zstd-compressed and zstd is not installed")
        return subprocess.run([zstd, "-dc", str(path)], capture_output=True,
                              check=True).stdout
    return data


# --------------------------------------------------------------------------
# The initramfs (a gzip'd "newc" cpio archive, written here)


class _Cpio:
    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 2 if mode & 0o040000 else 1, 0, len(data),
                  0, 0, rdev[0], rdev[1], len(encoded), 0)
        self.ino += 1
        self.out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self.out.write(encoded)
        self._pad()
        self.out.write(data)
        self._pad()

    def _pad(self) -> None:
        self.out.write(b"\0" * (-self.out.tell() % 4))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, 0o100000 | perm, data)

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self.ino = 0
        self._entry("TRAILER!!!", 0)
        return self.out.getvalue()


def _build_initrd(modules: Path, busybox: Path, init: str = INIT_SCRIPT,
                  extra: dict[str, tuple[bytes, int]] | None = None) -> bytes:
    """The archive; ``extra``: more files, path -> (content, mode), their
    directories made as needed."""
    cpio = _Cpio()
    directories = ["bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"]
    for path in sorted(extra or {}):
        parents = Path(path).parents
        for parent in reversed(list(parents)[:-1]):
            if str(parent) not in directories:
                directories.append(str(parent))
    for d in directories:
        cpio.directory(d)
    cpio.char_device("dev/console", 5, 1)
    cpio.char_device("dev/null", 1, 3)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    for module in sorted(modules.glob("*.ko")):
        cpio.file(f"lib/modules/{module.name}", module.read_bytes())
    for path, (data, mode) in sorted((extra or {}).items()):
        cpio.file(path, data, mode)
    cpio.file("init", init.encode(), 0o755)
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


def _agent_files(cache: Path, package: str, version: str) -> dict[str, tuple[bytes, int]]:
    """What the agent variant adds to the initramfs: qemu-ga, its libraries
    and the virtio-serial module."""
    agent = _fetch_agent(cache) / "qemu-ga"
    files = {"bin/qemu-ga": (agent.read_bytes(), 0o755)}
    files.update((path, (data, 0o755)) for path, data in _shared_libraries(agent).items())
    modules = _fetch_extra_modules(cache, package, version, AGENT_MODULES)
    files.update((f"lib/modules/{m.name}", (m.read_bytes(), 0o644))
                 for m in sorted(modules.glob("*.ko")))
    return files


def ensure_guest_image(cache: Path | None = None, *, guest_agent: bool = False,
                       virtio_mem: bool = False) -> GuestImage:
    """The kernel and initramfs, fetched and built once, then from the cache.

    Without apt metadata (an offline host), the newest kernel already in
    the cache is used.  ``guest_agent``: the variant with qemu-ga,
    ``virtio_mem``: the one with the virtio-mem driver (see the module),
    each cached under its own name.
    """
    cache = Path(cache) if cache is not None else cache_dir()
    busybox = find_static_busybox()
    if busybox is None:
        raise GuestImageError("no static busybox (busybox-static) on this host")
    with cache_lock(cache):
        try:
            package, version = kernel_package()
        except (GuestImageError, OSError, subprocess.TimeoutExpired) as e:
            cached = sorted(cache.glob("kernel-*/complete"), key=lambda p: p.stat().st_mtime)
            if not cached:
                raise GuestImageError(f"cannot find the guest kernel package: {e}") from e
            package, version = cached[-1].read_text().split()
        kdir = _fetch_kernel(cache, package, version)
        init = _init_script(guest_agent, virtio_mem)
        extra = _agent_files(cache, package, version) if guest_agent else {}
        if virtio_mem:
            modules = _fetch_extra_modules(cache, package, version, VIRTIO_MEM_MODULES)
            extra.update((f"lib/modules/{m.name}", (m.read_bytes(), 0o644))
                         for m in sorted(modules.glob("*.ko")))
        digest = hashlib.sha256()
        digest.update(init.encode())
        digest.update(busybox.read_bytes())
        for module in sorted((kdir / "modules").glob("*.ko")):
            digest.update(module.name.encode())
            digest.update(module.read_bytes())
        for path, (data, _mode) in sorted(extra.items()):
            digest.update(path.encode())
            digest.update(data)
        # Each variant under a prefix of its own, so that building one never
        # prunes the other.
        prefix = ("initrd" + ("+agent" if guest_agent else "")
                  + ("+virtio_mem" if virtio_mem else "") + "-")
        initrd = cache / f"{prefix}{digest.hexdigest()[:16]}.cpio.gz"
        if not initrd.exists():
            tmp = initrd.with_name(f".{initrd.name}.{os.getpid()}")
            tmp.write_bytes(_build_initrd(kdir / "modules", busybox, init, extra))
            os.replace(tmp, initrd)
        for path in (kdir, kdir / "vmlinuz", initrd):
            os.chmod(path, os.stat(path).st_mode | 0o444 | (0o111 if path.is_dir() else 0))
        _prune(cache, keep={kdir.name, initrd.name}, initrd_prefix=prefix)
    return GuestImage(kdir / "vmlinuz", initrd, package, version)


def _prune(cache: Path, keep: set[str], initrd_prefix: str = "initrd-") -> None:
    """Drop kernels and initramfs images (of this variant) of earlier versions."""
    for path in [*cache.glob("kernel-*"), *cache.glob(f"{initrd_prefix}*.cpio.gz")]:
        if path.name not in keep:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


# --------------------------------------------------------------------------
# Domains


def domain_xml(name: str, uuid: str, image: GuestImage, serial_path: Path, *,
               memory_mib: int = 512, vcpus: int = 1, dirty_mib: int = 0,
               kind: str | None = None, emulator: str | None = None,
               stats_period: int = 1, guest_agent: bool = False,
               balloon_driver: bool = True,
               balloon_attributes: dict[str, str] | None = None,
               disk: Path | None = None, metadata: str = "", virtio_mem_mib: int = 0,
               virtio_mem_block_kib: int = 2048, virtio_mem_requested_mib: int = 0) -> str:
    """A transient domain booting ``image``, its console written to ``serial_path``.

    ``virtio_mem_mib``: a virtio-mem device of that size (blocks of
    ``virtio_mem_block_kib``, ``virtio_mem_requested_mib`` plugged at boot)
    beside the ``memory_mib`` of boot memory: the domain gets the
    ``<maxMemory>`` and the NUMA cell it needs, and the guest kernel onlines
    what the device plugs as movable memory, so that it can be unplugged
    again (the image needs ``ensure_guest_image(virtio_mem=True)``).

    ``guest_agent``: with the agent's virtio-serial channel (libvirt picks
    the socket); ``balloon_driver`` False: the guest does not load its
    balloon driver (the agent image only); ``balloon_attributes``: more
    attributes of ``<memballoon>`` (``autodeflate``, ``freePageReporting``).
    ``disk``: a raw image attached as virtio disk ``vda`` (the guest needs no
    driver for it: QEMU's block layer, where I/O limits apply, has it
    anyway); ``metadata``: XML put in the domain's ``<metadata>``.  All off
    by default, so the default domain stays as it was.
    """
    kind = kind or domain_type()
    emulator = emulator or find_qemu() or "/usr/bin/qemu-system-x86_64"
    cmdline = "console=ttyS0 loglevel=4 mitigations=off"
    if dirty_mib:
        cmdline += f" mom_dirty_mib={int(dirty_mib)}"
    if not balloon_driver:
        cmdline += " mom_no_balloon"
    channel = (f"""    <channel type='unix'>
      <target type='virtio' name='{AGENT_PORT_NAME}'/>
    </channel>
""" if guest_agent else "")
    balloon = "".join(f" {key}='{escape(value)}'"
                      for key, value in (balloon_attributes or {}).items())
    hotplug = cpu = device = ""
    if virtio_mem_mib:
        cmdline += " memhp_default_state=online_movable"
        hotplug = (f"\n  <maxMemory slots='1' unit='MiB'>"
                   f"{int(memory_mib) + int(virtio_mem_mib)}</maxMemory>")
        cpu = (f"\n  <cpu>\n    <numa>\n      <cell id='0' cpus='0-{int(vcpus) - 1}' "
               f"memory='{int(memory_mib)}' unit='MiB'/>\n    </numa>\n  </cpu>")
        device = f"""
    <memory model='virtio-mem'>
      <target>
        <size unit='MiB'>{int(virtio_mem_mib)}</size>
        <node>0</node>
        <block unit='KiB'>{int(virtio_mem_block_kib)}</block>
        <requested unit='MiB'>{int(virtio_mem_requested_mib)}</requested>
      </target>
    </memory>"""
    return f"""<domain type='{kind}'>
  <name>{escape(name)}</name>
  <uuid>{uuid}</uuid>{hotplug}
  <memory unit='MiB'>{memory_mib}</memory>
  <currentMemory unit='MiB'>{memory_mib}</currentMemory>
  <vcpu>{vcpus}</vcpu>{cpu}
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(Path(image.kernel).absolute()))}</kernel>
    <initrd>{escape(str(Path(image.initrd).absolute()))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{escape(emulator)}</emulator>
    <serial type='file'>
      <source path='{escape(str(Path(serial_path).absolute()))}'/>
      <target port='0'/>
    </serial>
{channel}    <memballoon model='virtio'{balloon}>
      <stats period='{int(stats_period)}'/>
    </memballoon>{device}{_disk_xml(disk)}
  </devices>{f"{chr(10)}  <metadata>{metadata}</metadata>" if metadata else ""}
</domain>
"""


def _disk_xml(disk: Path | None) -> str:
    if disk is None:
        return ""
    return f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{escape(str(Path(disk).absolute()))}'/>
      <target dev='vda' bus='virtio'/>
    </disk>"""


class SerialConsole:
    """What a guest printed on its serial console (a file)."""

    _MEMTOTAL = re.compile(rf"^{MARK} MemTotal:\s+(\d+) kB", re.M)

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def text(self) -> str:
        try:
            return self.path.read_text(errors="replace")
        except OSError:
            return ""

    def memtotals(self) -> list[int]:
        """Every MemTotal (KiB) the guest printed, oldest first."""
        return [int(m) for m in self._MEMTOTAL.findall(self.text())]

    def memtotal(self) -> int | None:
        values = self.memtotals()
        return values[-1] if values else None

    def marks(self) -> list[str]:
        return [line for line in self.text().splitlines() if line.startswith(MARK)]


def guest_image_or_skip(**options: bool) -> GuestImage:
    """``ensure_guest_image(**options)``, or the test skipped, saying why, on a
    host where no guest image can be made (so no QEMU guest can run)."""
    import pytest  # only the tests that boot guests need it

    try:
        return ensure_guest_image(**options)
    except GuestImageError as e:
        pytest.skip(f"no guest image can be made here, so no QEMU guest can run: {e}")
