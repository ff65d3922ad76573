"""momctl's view of a guest's disk I/O limits (IoTune, IoTuneCurrent, the io_tune control)."""

from __future__ import annotations

from typing import Any

from .formatting import format_kib

#: The limits in the order shown, with a short name each.
_LIMITS = (("total_bytes_sec", "total"), ("read_bytes_sec", "read"),
           ("write_bytes_sec", "write"), ("total_iops_sec", "total"),
           ("read_iops_sec", "read"), ("write_iops_sec", "write"))


def limits_text(limits: dict[str, Any]) -> str:
    """``total 10.0 MiB/s, read 200 IOPS``; ``unlimited`` when every limit is 0."""
    parts = []
    for key, short in _LIMITS:
        value = limits.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not value:
            continue
        if key.endswith("_bytes_sec"):
            parts.append(f"{short} {format_kib(value / 1024)}/s")
        else:
            parts.append(f"{short} {value} IOPS")
    return ", ".join(parts) or "unlimited"


def disk_lines(disks: Any, indent: str = "    ") -> list[str]:
    """One line per disk (``vda /path: ...``); a disk of IoTune gets its
    guaranteed, maximum and current limits on lines of their own."""
    if not isinstance(disks, list) or not disks:
        return [f"{indent}none"]
    lines = []
    for disk in disks:
        if not isinstance(disk, dict):
            lines.append(f"{indent}{disk!r}")
            continue
        name = f"{disk.get('name', '?')}" + (f" {disk['path']}" if disk.get("path") else "")
        nested = [k for k in ("guaranteed", "maximum", "current") if isinstance(disk.get(k), dict)]
        if nested:
            lines.append(f"{indent}{name}")
            lines += [f"{indent}  {k:<10}  {limits_text(disk[k])}" for k in nested]
        else:
            lines.append(f"{indent}{name}: {limits_text(disk)}")
    return lines
