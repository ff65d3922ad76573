"""KSM's files in sysfs: their names (the one list of them) and their reader."""

from __future__ import annotations

from pathlib import Path

#: KSM's directory below the root of sysfs.
KSM_SYSFS_DIR = Path("kernel/mm/ksm")
#: KSM's directory on the real host.
DEFAULT_KSM_DIR = Path("/sys") / KSM_SYSFS_DIR

#: The tunables, in the order a writer must write them: merge_across_nodes
#: first (the kernel only takes it while nothing is shared, and an unmerge
#: may be needed), run last, so that ksmd starts with its new scan rate.
KSM_TUNABLES: tuple[str, ...] = ("merge_across_nodes", "pages_to_scan",
                                 "sleep_millisecs", "run")
#: The counters, read-only.
KSM_COUNTERS: tuple[str, ...] = ("pages_shared", "pages_sharing", "pages_unshared",
                                 "pages_volatile", "full_scans")

#: sysfs file name -> host field name (run -> ksm_run, ...).
KSM_FILES: dict[str, str] = {name: f"ksm_{name}" for name in KSM_TUNABLES + KSM_COUNTERS}

# Only kernels built with NUMA support have this file.
OPTIONAL_KSM_FILES: frozenset[str] = frozenset({"merge_across_nodes"})


def read_ksm(ksm_dir: Path) -> dict[str, int]:
    """Read the KSM files of ``ksm_dir`` into host fields.

    Raises ``FileNotFoundError`` when ``ksm_dir`` or a file other than
    ``merge_across_nodes`` is missing, ``OSError``/``ValueError`` when one
    cannot be read or parsed: the caller drops the whole group then, since
    a partial KSM picture would mislead a policy.
    """
    fields: dict[str, int] = {}
    for name, field in KSM_FILES.items():
        try:
            text = (ksm_dir / name).read_text()
        except FileNotFoundError:
            if name in OPTIONAL_KSM_FILES and ksm_dir.is_dir():
                continue
            raise
        fields[field] = int(text.strip())
    return fields
