"""``HostTime``: the host's local wall clock, split as time-of-day policies read it."""

from __future__ import annotations

from datetime import datetime
from typing import Iterable

from .base import HostStatistics, Sample

#: The fields, in the order of ``datetime``'s own.
TIME_FIELDS: tuple[str, ...] = ("time_year", "time_month", "time_day", "time_hour",
                                "time_minute", "time_second", "time_microsecond")


def time_fields(moment: datetime) -> Sample:
    """``moment`` as the HostTime fields (also the simulator's simulated clock)."""
    parts = (moment.year, moment.month, moment.day, moment.hour, moment.minute,
             moment.second, moment.microsecond)
    return dict(zip(TIME_FIELDS, parts))


class HostTime(HostStatistics):
    """The local date and time of each sample, from the roots' wall clock.

    Local, not UTC: "at night" in a policy means the host's night.  MoM's
    collector has the same seven fields and no weekday.
    """

    name = "HostTime"
    fields = frozenset(TIME_FIELDS)

    def collect(self, qemu_pids: Iterable[int] | None) -> Sample:
        return time_fields(self.roots.wall_clock())
