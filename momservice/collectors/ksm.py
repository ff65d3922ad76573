"""Reader for the KSM tunables and counters in ``/sys/kernel/mm/ksm``."""

from __future__ import annotations

from pathlib import Path

#: sysfs file name -> host field name.
KSM_FILES: dict[str, str] = {
    "run": "ksm_run",
    "pages_to_scan": "ksm_pages_to_scan",
    "sleep_millisecs": "ksm_sleep_millisecs",
    "merge_across_nodes": "ksm_merge_across_nodes",
    "pages_shared": "ksm_pages_shared",
    "pages_sharing": "ksm_pages_sharing",
    "pages_unshared": "ksm_pages_unshared",
    "pages_volatile": "ksm_pages_volatile",
    "full_scans": "ksm_full_scans",
}

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
