"""Node descriptions for libvirt's test driver (``test:///abs/path/node.xml``).

The test driver loads a whole fake host from one XML file; each connection
gets its own copy of that state.  These helpers write such a file with N
running domains whose names, UUIDs and memory sizes are deterministic, so
tests can predict what a hypervisor interface must report.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from html import escape  # light: xml.sax.saxutils would pull in urllib

# A fixed namespace makes guest_uuid(i) the same in every run.
_UUID_NAMESPACE = uuidlib.UUID("6d6f6d00-7465-7374-2d67-756573747300")


@dataclass(frozen=True)
class GuestSpec:
    """One test-driver domain."""

    name: str
    uuid: str
    memory_kib: int                    # <memory>: the balloon maximum
    current_kib: int                   # <currentMemory>: the balloon size
    min_guarantee_mib: int | None = None

    @property
    def balloon_min_kib(self) -> int:
        """What a hypervisor interface should report as balloon_min."""
        return (self.min_guarantee_mib or 0) * 1024


def guest_name(index: int, prefix: str = "guest") -> str:
    return f"{prefix}-{index:04d}"


def guest_uuid(index: int, prefix: str = "guest") -> str:
    return str(uuidlib.uuid5(_UUID_NAMESPACE, guest_name(index, prefix)))


def guest_specs(count: int, *, prefix: str = "guest", start: int = 0,
                min_guarantee_every: int = 3) -> list[GuestSpec]:
    """``count`` guests: memory 1-4 GiB, ballooned to 50-100 %, and every
    ``min_guarantee_every``-th one (0: none) with a min_guarantee in MiB."""
    specs = []
    for i in range(start, start + count):
        memory = (1 + i % 4) * 1024 * 1024
        current = memory - (i % 3) * memory // 4
        guarantee = None
        if min_guarantee_every and i % min_guarantee_every == 0:
            guarantee = 256 + 128 * (i % 5)
        specs.append(GuestSpec(guest_name(i, prefix), guest_uuid(i, prefix),
                               memory, current, guarantee))
    return specs


def domain_xml(spec: GuestSpec) -> str:
    """A test-driver domain definition (also usable with createXML)."""
    memtune = ""
    if spec.min_guarantee_mib is not None:
        memtune = (f"  <memtune><min_guarantee unit='MiB'>{spec.min_guarantee_mib}"
                   "</min_guarantee></memtune>\n")
    return (
        "<domain type='test'>\n"
        f"  <name>{escape(spec.name)}</name>\n"
        f"  <uuid>{spec.uuid}</uuid>\n"
        f"  <memory unit='KiB'>{spec.memory_kib}</memory>\n"
        f"  <currentMemory unit='KiB'>{spec.current_kib}</currentMemory>\n"
        f"{memtune}"
        "  <vcpu>1</vcpu>\n"
        "  <os><type arch='x86_64'>hvm</type></os>\n"
        "  <devices><memballoon model='virtio'><stats period='5'/></memballoon></devices>\n"
        "</domain>\n"
    )


def write_node_xml(path: Path, guests: int | Sequence[GuestSpec], *,
                   min_guarantee_every: int = 3) -> Path:
    """Write a node with running domains; ``guests`` is a count or specs.

    Domains of a node file start out running in the test driver.  Returns
    the absolute path, ready for ``f"test://{path}"``.
    """
    specs = guest_specs(guests, min_guarantee_every=min_guarantee_every) \
        if isinstance(guests, int) else list(guests)
    path = Path(path).absolute()
    body = "".join(domain_xml(spec) for spec in specs)
    path.write_text(
        "<node>\n"
        "  <cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores>"
        "<threads>1</threads><active>4</active><mhz>2000</mhz>"
        "<model>x86_64</model></cpu>\n"
        "  <memory>67108864</memory>\n"
        f"{body}"
        "</node>\n")
    return path


def node_uri(path: Path) -> str:
    """The test-driver URI of a node file."""
    return f"test://{Path(path).absolute()}"
