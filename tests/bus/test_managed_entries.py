"""GetManagedObjects entries kept between replies (Published.managed_entry).

A guest's entry is marshalled once and then reused with only its volatile
doubles (StatsAge, and stats_age in Statistics) written anew, until what
its other properties are read from changes.  Each reply must still be the
bytes dbus-next's own marshaller makes from the current values.
"""

from __future__ import annotations

from types import SimpleNamespace

from dbus_next import Variant
from dbus_next._private.marshaller import Marshaller

from momservice.bus.connection import property_values, property_variants
from momservice.bus.interfaces import GuestInterface
from momservice.bus.wire import join_object_entries
from momservice.contract import guest_path
from momservice.policy.entity import Entity, GUEST_SCHEMA

UUID = "0b70676a-bf21-531e-a6d1-56255d1820a9"
SAMPLE = {"balloon_cur": 1048576, "balloon_max": 2097152, "balloon_min": 262144,
          "mem_available": 1048576, "mem_unused": 524288, "mem_usable": 500000,
          "swap_in": 0, "swap_out": 0, "major_fault": 3, "minor_fault": 9, "rss": 900000,
          "stats_age": 1.25}


def _guest() -> GuestInterface:
    entity = Entity("guest", {"name": "web", "uuid": UUID, "pid": 4242}, schema=GUEST_SCHEMA)
    entity.add_sample(dict(SAMPLE))
    engine = SimpleNamespace(guests={UUID: entity}, last_evaluation=None)
    return GuestInterface(SimpleNamespace(engine=engine), None, UUID)


def _dbus_next_reply(guest: GuestInterface) -> bytes:
    body = [{guest_path(UUID): {guest.name: property_variants(guest)}}]
    marshaller = Marshaller("a{oa{sa{sv}}}", body)
    marshaller.marshall()
    return bytes(marshaller.buffer)


def _reply(guest: GuestInterface) -> bytes:
    return bytes(join_object_entries([guest.managed_entry(guest_path(UUID),
                                                          property_values)]).data)


def test_a_kept_entry_takes_new_stats_ages_and_stays_what_dbus_next_would_send():
    guest = _guest()
    assert _reply(guest) == _dbus_next_reply(guest)
    kept = guest._entry  # noqa: SLF001
    assert set(kept.doubles) == {"StatsAge", "Statistics/stats_age"}
    for age in (2.5, 0.0, 1e9):
        guest.entity.add_sample({**SAMPLE, "stats_age": age})
        assert _reply(guest) == _dbus_next_reply(guest)
        assert guest._entry is kept   # noqa: SLF001 - reused, not written again


def test_any_other_change_writes_the_entry_again():
    guest = _guest()
    _reply(guest)
    kept = guest._entry  # noqa: SLF001
    guest.entity.add_sample({**SAMPLE, "balloon_cur": 1000000, "stats_age": 3.0})
    assert _reply(guest) == _dbus_next_reply(guest)
    assert guest._entry is not kept  # noqa: SLF001
    kept = guest._entry  # noqa: SLF001
    guest.balloon_target = 999424
    assert _reply(guest) == _dbus_next_reply(guest)
    assert guest._entry is not kept  # noqa: SLF001


def test_a_sample_without_stats_age_changes_the_layout():
    guest = _guest()
    _reply(guest)
    without = {k: v for k, v in SAMPLE.items() if k != "stats_age"}
    guest.entity.add_sample(without)
    assert _reply(guest) == _dbus_next_reply(guest)
    assert "Statistics/stats_age" not in guest._entry.doubles  # noqa: SLF001
    guest.entity.add_sample({**SAMPLE, "stats_age": 7.5})
    assert _reply(guest) == _dbus_next_reply(guest)
    statistics = dict(property_variants(guest))["Statistics"].value
    assert statistics["stats_age"] == Variant("d", 7.5)
