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
from typing import Iterator
from xml.sax.saxutils import escape

from tests.helpers.file_lock import flock_within

KERNEL_META_PACKAGE = "linux-image-amd64"
#: The balloon driver and what it needs, in load order.
VIRTIO_MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev",
                  "virtio_pci_legacy_dev", "virtio_pci", "virtio_balloon")
#: The virtio-mem driver (``ensure_guest_image(virtio_mem=True)``), loaded
#: after the others: it needs only virtio and virtio_ring.
VIRTIO_MEM_MODULE = "virtio_mem"
BUSYBOX_PATHS = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
QEMU_PATHS = ("qemu-system-x86_64", "/usr/bin/qemu-system-x86_64", "/usr/libexec/qemu-kvm")
MARK = "MOMTEST"

def _init_script(modules: tuple[str, ...]) -> str:
    """The guest's /init, loading ``modules`` in this order."""
    return _INIT_TEMPLATE.replace("@MODULES@", " ".join(modules))


_INIT_TEMPLATE = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "{MARK} init started"
for m in @MODULES@; do
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
INIT_SCRIPT = _init_script(VIRTIO_MODULES)


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
    show = _run(["apt-cache", "show", "--no-all-versions", package], timeout=60)
    version = re.search(r"^Version:\s*(\S+)", show, re.M)
    if version is None:
        raise GuestImageError(f"no version for {package}:\n{show}")
    return package, version.group(1)


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


def _fetch_kernel(cache: Path, package: str, version: str,
                  extra_modules: tuple[str, ...] = ()) -> Path:
    """Download and unpack the kernel and the virtio modules (cached);
    ``extra_modules`` (virtio drivers beyond the balloon's) are added to a
    cached kernel that lacks them, beside the others."""
    final = _kernel_dir(cache, package, version)
    if (final / "complete").exists():
        _add_modules(final, package, version, extra_modules)
        return final
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # apt's sandbox user may write here
        unpacked = unpack_package(package, version, work)
        kernels = sorted(unpacked.glob("boot/vmlinuz-*"))
        if not kernels:
            raise GuestImageError(f"{package} {version} holds no /boot/vmlinuz-*")
        staging = work / "out"
        (staging / "modules").mkdir(parents=True)
        shutil.copy2(kernels[0], staging / "vmlinuz")
        _copy_modules(unpacked, VIRTIO_MODULES + extra_modules, staging)
        (staging / "complete").write_text(f"{package} {version}\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    return final


def _copy_modules(unpacked: Path, names: tuple[str, ...], kdir: Path) -> None:
    """Copy the virtio modules ``names`` from an unpacked kernel package into
    ``kdir/modules``, decompressed; those built in are listed in ``kdir/builtin``."""
    builtin = _builtin(kdir)
    for name in names:
        found = [p for p in unpacked.glob(f"lib/modules/*/kernel/drivers/virtio/{name}.ko*")]
        if not found:
            # Built into the kernel: nothing to load (insmod fails harmlessly).
            builtin.add(name)
            continue
        target = kdir / "modules" / f"{name}.ko"
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        tmp.write_bytes(_decompressed(found[0]))
        os.replace(tmp, target)
    (kdir / "builtin").write_text("".join(f"{n}\n" for n in sorted(builtin)))


def _builtin(kdir: Path) -> set[str]:
    try:
        return set((kdir / "builtin").read_text().split())
    except OSError:
        return set()


def _add_modules(kdir: Path, package: str, version: str, names: tuple[str, ...]) -> None:
    """Fetch the modules of ``names`` a cached kernel does not have yet (in
    place: the kernel and the other modules stay as they are)."""
    missing = tuple(n for n in names if not (kdir / "modules" / f"{n}.ko").exists()
                    and n not in _builtin(kdir))
    if not missing:
        return
    with tempfile.TemporaryDirectory(dir=kdir.parent, prefix=".fetch-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # apt's sandbox user may write here
        _copy_modules(unpack_package(package, version, work), missing, kdir)


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


def _build_initrd(modules: list[Path], busybox: Path, init_script: str) -> bytes:
    cpio = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"):
        cpio.directory(d)
    cpio.char_device("dev/console", 5, 1)
    cpio.char_device("dev/null", 1, 3)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    for module in modules:
        cpio.file(f"lib/modules/{module.name}", module.read_bytes())
    cpio.file("init", init_script.encode(), 0o755)
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


def ensure_guest_image(cache: Path | None = None, *, virtio_mem: bool = False) -> GuestImage:
    """The kernel and initramfs, fetched and built once, then from the cache.

    ``virtio_mem``: the initramfs also loads the virtio-mem driver (an image
    of its own, cached beside the default one; domains give the guest
    ``memhp_default_state`` so that what it plugs is onlined).
    Without apt metadata (an offline host), the newest kernel already in
    the cache is used.
    """
    cache = Path(cache) if cache is not None else cache_dir()
    busybox = find_static_busybox()
    if busybox is None:
        raise GuestImageError("no static busybox (busybox-static) on this host")
    extra = (VIRTIO_MEM_MODULE,) if virtio_mem else ()
    variant = "".join(f"{name}-" for name in extra)
    init_script = _init_script(VIRTIO_MODULES + extra)
    with cache_lock(cache):
        try:
            package, version = kernel_package()
        except (GuestImageError, OSError, subprocess.TimeoutExpired) as e:
            cached = sorted(cache.glob("kernel-*/complete"), key=lambda p: p.stat().st_mtime)
            if not cached:
                raise GuestImageError(f"cannot find the guest kernel package: {e}") from e
            package, version = cached[-1].read_text().split()
        kdir = _fetch_kernel(cache, package, version, extra)
        # Only the modules this image loads (a cached kernel may hold more).
        wanted = {f"{name}.ko" for name in VIRTIO_MODULES + extra}
        modules = [m for m in sorted((kdir / "modules").glob("*.ko")) if m.name in wanted]
        digest = hashlib.sha256()
        digest.update(init_script.encode())
        digest.update(busybox.read_bytes())
        for module in modules:
            digest.update(module.name.encode())
            digest.update(module.read_bytes())
        initrd = cache / f"initrd-{variant}{digest.hexdigest()[:16]}.cpio.gz"
        if not initrd.exists():
            tmp = initrd.with_name(f".{initrd.name}.{os.getpid()}")
            tmp.write_bytes(_build_initrd(modules, busybox, init_script))
            os.replace(tmp, initrd)
        for path in (kdir, kdir / "vmlinuz", initrd):
            os.chmod(path, os.stat(path).st_mode | 0o444 | (0o111 if path.is_dir() else 0))
        _prune(cache, keep={kdir.name, initrd.name}, variant=variant)
    return GuestImage(kdir / "vmlinuz", initrd, package, version)


def _prune(cache: Path, keep: set[str], variant: str = "") -> None:
    """Drop kernels and initramfs images of earlier versions (images of
    other variants, e.g. with virtio-mem, may be another run's: left alone)."""
    same_variant = re.compile(rf"^initrd-{re.escape(variant)}[0-9a-f]{{16}}\.cpio\.gz$")
    for path in [*cache.glob("kernel-*"), *cache.glob("initrd*.cpio.gz")]:
        if path.name.startswith("initrd") and not same_variant.match(path.name):
            continue
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
               stats_period: int = 1, virtio_mem_mib: int = 0,
               virtio_mem_block_kib: int = 2048, virtio_mem_requested_mib: int = 0) -> str:
    """A transient domain booting ``image``, its console written to ``serial_path``.

    ``virtio_mem_mib``: a virtio-mem device of that size (blocks of
    ``virtio_mem_block_kib``, ``virtio_mem_requested_mib`` plugged at boot)
    beside the ``memory_mib`` of boot memory: the domain gets the
    ``<maxMemory>`` and the NUMA cell it needs, and the guest kernel onlines
    what the device plugs as movable memory, so that it can be unplugged
    again (the image needs ``ensure_guest_image(virtio_mem=True)``).
    """
    kind = kind or domain_type()
    emulator = emulator or find_qemu() or "/usr/bin/qemu-system-x86_64"
    cmdline = "console=ttyS0 loglevel=4 mitigations=off"
    if dirty_mib:
        cmdline += f" mom_dirty_mib={int(dirty_mib)}"
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
    <memballoon model='virtio'>
      <stats period='{int(stats_period)}'/>
    </memballoon>{device}
  </devices>
</domain>
"""


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
