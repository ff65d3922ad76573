"""The block I/O limits of a guest's disks, as policies see them (MoM's IoTune).

``guest.io_tune`` is a list with one :class:`IoTuneDevice` per disk that has
limits in the guest's metadata: its ``name`` (the target, ``vda``), its
``path`` (the source), ``guaranteed`` and ``maximum`` (:class:`IoLimits`,
from the metadata) and ``current`` (what libvirt applies now), and the six
setters MoM's policies call (``setTotalBytesSec`` ... ``setWriteIopsSec``).
``guest.io_tune_current`` lists every disk of the guest with its current
limits (:class:`DiskIoTune`).  Limits are bytes or operations per second;
0 means unlimited, as in libvirt.

A setter's request becomes the guest's ``io_tune`` control: a list with one
dict per disk set (``name``, ``path`` and the limits asked for), which the
IoTune mechanism applies where it differs from ``current``.  Deliberate
difference from MoM: a setter does not change ``current`` during the
evaluation (MoM's did); ``current`` stays what the disk has.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import PolicyError
from .records import PolicyRecord
from .runtime import show

#: The limits of a disk, as libvirt's ``<iotune>`` and setBlockIoTune name them.
IO_LIMIT_KEYS: tuple[str, ...] = (
    "total_bytes_sec", "read_bytes_sec", "write_bytes_sec",
    "total_iops_sec", "read_iops_sec", "write_iops_sec")

#: MoM's setters, by the limit each sets.
SETTERS: dict[str, str] = {
    "setTotalBytesSec": "total_bytes_sec", "setReadBytesSec": "read_bytes_sec",
    "setWriteBytesSec": "write_bytes_sec", "setTotalIopsSec": "total_iops_sec",
    "setReadIopsSec": "read_iops_sec", "setWriteIopsSec": "write_iops_sec",
}

#: The statistics and the control holding these records.
IO_TUNE = "io_tune"
IO_TUNE_CURRENT = "io_tune_current"


class IoLimits(PolicyRecord):
    """Six limits of one disk (``total_bytes_sec`` ... ``write_iops_sec``),
    read as attributes; a limit not given is 0 (unlimited)."""

    __slots__ = ("values", "latest")

    def __init__(self, values: Mapping[str, int] | None = None) -> None:
        given = values or {}
        self.values: dict[str, int] = {k: int(given.get(k) or 0) for k in IO_LIMIT_KEYS}
        self.latest = self.values

    def plain(self) -> dict[str, Any]:
        return dict(self.values)

    def __eq__(self, other: object) -> bool:
        return type(other) is IoLimits and other.values == self.values

    def __hash__(self) -> int:
        return hash(tuple(self.values.values()))

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v}" for k, v in self.values.items() if v)
        return f"<limits {given or 'unlimited'}>"


class IoTuneDevice(PolicyRecord):
    """One disk of ``guest.io_tune``: identity, the limits its metadata gives,
    the limits it has, and MoM's setters (which record, see the module)."""

    __slots__ = ("name", "path", "guaranteed", "maximum", "current", "latest")

    field = IO_TUNE
    control = IO_TUNE

    def __init__(self, name: str, path: str | None, guaranteed: IoLimits, maximum: IoLimits,
                 current: IoLimits) -> None:
        self.name = name
        self.path = path
        self.guaranteed = guaranteed
        self.maximum = maximum
        self.current = current
        self.latest = {"name": name, "path": path or "", "guaranteed": guaranteed,
                       "maximum": maximum, "current": current}

    def call(self, method: str, args: list[Any], writes: dict[str, Any]) -> Any:
        key = SETTERS.get(method)
        if key is None:
            raise PolicyError(f"disk {self.name} has no method {method} (it has "
                              f"{', '.join(SETTERS)})")
        if len(args) != 1:
            raise PolicyError(f"{method} takes 1 argument, {len(args)} given")
        value = args[0]
        if type(value) is int:   # the usual case, first
            writes[key] = value
            return value
        if value is None:
            # nil asks for nothing: the limit stays as it is.
            writes.pop(key, None)
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not math.isfinite(value)):
            raise PolicyError(f"{method} needs a number, got {show(value)}")
        writes[key] = int(value)
        return writes[key]

    def request(self, writes: Mapping[str, Any]) -> dict[str, Any]:
        return {"name": self.name, "path": self.path or "", **writes}

    def plain(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path or "",
                "guaranteed": self.guaranteed.plain(), "maximum": self.maximum.plain(),
                "current": self.current.plain()}

    def _key(self) -> tuple:
        return (self.name, self.path, self.guaranteed, self.maximum, self.current)

    def __eq__(self, other: object) -> bool:
        return type(other) is IoTuneDevice and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"<io_tune {self.name}>"


class DiskIoTune(PolicyRecord):
    """One disk of ``guest.io_tune_current``: ``name``, ``path`` and the
    limits it has (``ioTune``, MoM's key)."""

    __slots__ = ("name", "path", "ioTune", "latest")

    field = IO_TUNE_CURRENT

    def __init__(self, name: str, path: str | None, limits: IoLimits) -> None:
        self.name = name
        self.path = path
        self.ioTune = limits
        self.latest = {"name": name, "path": path or "", "ioTune": limits}

    def plain(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path or "", **self.ioTune.plain()}

    def _key(self) -> tuple:
        return (self.name, self.path, self.ioTune)

    def __eq__(self, other: object) -> bool:
        return type(other) is DiskIoTune and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"<disk {self.name} {self.ioTune!r}>"


def from_plain(field: str, value: Any) -> Any:
    """``io_tune`` or ``io_tune_current`` as records, from the plain form the
    bus and ``plain()`` give (a list of dictionaries); other values as they are."""
    if field not in (IO_TUNE, IO_TUNE_CURRENT) or not isinstance(value, list):
        return value
    records: list[PolicyRecord] = []
    for item in value:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ValueError(f"{field}: each disk needs a name, got {item!r}")
        path = item.get("path") or None
        if field == IO_TUNE:
            records.append(IoTuneDevice(item["name"], path, IoLimits(item.get("guaranteed")),
                                        IoLimits(item.get("maximum")),
                                        IoLimits(item.get("current"))))
        else:
            records.append(DiskIoTune(item["name"], path, IoLimits(item)))
    return records
