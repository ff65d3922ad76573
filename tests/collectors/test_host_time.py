"""HostTime: the host's local wall clock, from the clock the collector is given."""

from __future__ import annotations

from datetime import datetime

from momservice import fields
from momservice.collectors import HostCollector
from momservice.collectors.base import HostRoots
from momservice.collectors.host_time import HostTime
from tests.helpers.fake_host import FakeHost


def test_the_seven_fields_of_moms_collector_from_the_given_clock():
    roots = HostRoots(wall_clock=lambda: datetime(2026, 12, 1, 14, 5, 7, 123456))
    assert HostTime(roots).collect(None) == {
        "time_year": 2026, "time_month": 12, "time_day": 1, "time_hour": 14,
        "time_minute": 5, "time_second": 7, "time_microsecond": 123456}


def test_each_sample_reads_the_clock_again(tmp_path):
    moments = iter([datetime(2026, 12, 31, 23, 59, 59, 999999),
                    datetime(2027, 1, 1, 0, 0, 0, 0)])
    collector = HostCollector(FakeHost(tmp_path).proc, FakeHost(tmp_path).sys,
                              collectors=("HostTime",), wall_clock=lambda: next(moments))
    first, second = collector.collect([]), collector.collect([])
    assert (first["time_year"], first["time_hour"], first["time_microsecond"]) == \
        (2026, 23, 999999)
    assert (second["time_year"], second["time_month"], second["time_day"],
            second["time_hour"]) == (2027, 1, 1, 0)


def test_by_default_the_clock_is_local_time():
    # datetime.now() without a zone: the host's local time, as MoM's.
    assert HostRoots().wall_clock == datetime.now
    assert HostCollector().collectors[-1].roots.wall_clock == datetime.now


def test_the_fields_are_statistics_only_not_host_properties():
    rows = {f.name: f for f in fields.HOST_STATISTICS}
    assert HostTime.fields <= fields.HOST_FIELDS
    assert all(rows[name].prop is None for name in HostTime.fields)
