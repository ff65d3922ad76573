"""Parser for pressure stall information (``/proc/pressure/memory``)."""

from __future__ import annotations


def parse_psi(text: str) -> dict[str, dict[str, float]]:
    """Parse a PSI file into ``{"some": {"avg10": ..., ...}, "full": ...}``.

    ``total`` (microseconds) is kept as a float like the averages.
    """
    lines: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        kind, *pairs = line.split()
        values: dict[str, float] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if sep:
                values[key] = float(value)
        lines[kind] = values
    return lines


def memory_pressure_fields(text: str) -> dict[str, float]:
    """Map ``/proc/pressure/memory`` to the host fields (avg10, percent).

    A line the kernel does not write is left out rather than invented.
    """
    psi = parse_psi(text)
    fields: dict[str, float] = {}
    for kind in ("some", "full"):
        if kind in psi and "avg10" in psi[kind]:
            fields[f"mem_pressure_{kind}"] = psi[kind]["avg10"]
    return fields
