"""Parsers for ``/proc/meminfo`` and ``/proc/vmstat``."""

from __future__ import annotations

from .errors import CollectionError

# Keys every kernel since 2.6 writes; without them the sample is meaningless.
_REQUIRED = ("MemTotal", "MemFree", "Buffers", "Cached", "AnonPages",
             "SwapTotal", "SwapFree")


def parse_meminfo(text: str) -> dict[str, int]:
    """Parse ``/proc/meminfo`` into ``{key: value}``; values stay in kB.

    Lines without a unit (``HugePages_Total``) are counts and kept as is.
    """
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        fields = rest.split()
        if not fields:
            continue
        try:
            values[key.strip()] = int(fields[0])
        except ValueError:
            # A future kernel line we do not understand must not break
            # the lines we do.
            continue
    return values


def meminfo_fields(meminfo: dict[str, int]) -> dict[str, int]:
    """Map parsed meminfo to MoM's host fields (KiB).

    ``mem_free`` counts buffers and page cache as free, as MoM does:
    the kernel drops them under pressure before a guest would swap.
    Raises :class:`CollectionError` if a needed key is missing.
    """
    missing = [key for key in _REQUIRED if key not in meminfo]
    if missing:
        raise CollectionError(
            "/proc/meminfo lacks " + ", ".join(missing))
    return {
        "mem_available": meminfo["MemTotal"],
        "mem_free": meminfo["MemFree"] + meminfo["Buffers"]
        + meminfo["Cached"],
        "mem_unused": meminfo["MemFree"],
        "anon_pages": meminfo["AnonPages"],
        "swap_total": meminfo["SwapTotal"],
        "swap_usage": meminfo["SwapTotal"] - meminfo["SwapFree"],
    }


def parse_vmstat(text: str) -> dict[str, int]:
    """Parse ``/proc/vmstat`` (``name value`` lines) into a dict."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 2:
            continue
        try:
            values[fields[0]] = int(fields[1])
        except ValueError:
            continue
    return values
