"""CPU and NUMA node topology from the kernel's id lists."""

from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

_STAT_CPU_LINE = re.compile(r"^cpu[0-9]+\s", re.MULTILINE)


def parse_id_list(text: str) -> list[int]:
    """Expand a kernel id list such as ``0-3,5`` into ``[0, 1, 2, 3, 5]``.

    An empty list (the kernel writes just a newline, e.g. in
    ``cpu/offline``) gives ``[]``.  Malformed text raises ``ValueError``.
    """
    ids: list[int] = []
    text = text.strip()
    if not text:
        return ids
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        if sep:
            low, high = int(first), int(last)
            if high < low:
                raise ValueError(f"descending range {part!r}")
            ids.extend(range(low, high + 1))
        else:
            ids.append(int(first))
    return ids


def count_stat_cpus(stat_text: str) -> int:
    """Count the per-CPU ``cpuN`` lines of ``/proc/stat``.

    The kernel lists only online CPUs there, so this is a fallback for
    the sysfs ``online`` list when sysfs is not mounted.
    """
    return len(_STAT_CPU_LINE.findall(stat_text))


def numa_nodes(sys_root: Path = Path("/sys")) -> list[int]:
    """Return the ids of the online NUMA nodes.

    Empty when the kernel has no NUMA support (no ``node/online`` file):
    there are then no per-node statistics to read either.
    """
    path = sys_root / "devices/system/node/online"
    try:
        return parse_id_list(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        log.warning("cannot read NUMA nodes from %s: %s", path, err)
        return []
