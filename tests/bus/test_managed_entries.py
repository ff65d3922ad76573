"""GetManagedObjects entries written from plain values (Published.entry_properties)
and kept between replies (Published.managed_entry).

A guest's entry is written without making a Variant for any property or
statistic, then kept (compressed) and reused with only its volatile doubles
(StatsAge, and stats_age in Statistics) written anew, until what its other
properties are read from changes.  Each reply must still be the bytes
dbus-next's own marshaller makes from the Variants its getters give,
whatever the sample holds.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from dbus_next import Variant
from dbus_next._private.marshaller import Marshaller

from momservice.bus.connection import _object_entry, property_variants
from momservice.bus.interfaces import GuestInterface
from momservice.bus.wire import WireTypeError, join_object_entries, marshal_object_entry
from momservice.contract import guest_path
from momservice.policy.entity import Entity, GUEST_SCHEMA
from momservice.policy.iotune_value import DiskIoTune, IoLimits, IoTuneDevice

UUID = "0b70676a-bf21-531e-a6d1-56255d1820a9"
SAMPLE = {"balloon_cur": 1048576, "balloon_max": 2097152, "balloon_min": 262144,
          "mem_available": 1048576, "mem_unused": 524288, "mem_usable": 500000,
          "swap_in": 0, "swap_out": 0, "major_fault": 3, "minor_fault": 9, "rss": 900000,
          "stats_age": 1.25}
VDA = IoTuneDevice("vda", "/images/a.raw", IoLimits({"total_bytes_sec": 1048576}),
                   IoLimits({"total_iops_sec": 200}), IoLimits({"read_iops_sec": 7}))


def _guest(sample: dict, controls: dict | None = None) -> GuestInterface:
    entity = Entity("guest", {"name": "web", "uuid": UUID, "pid": 4242}, schema=GUEST_SCHEMA)
    entity.add_sample(sample)
    evaluation = None if controls is None else SimpleNamespace(guest_controls={UUID: controls})
    engine = SimpleNamespace(guests={UUID: entity}, last_evaluation=evaluation)
    return GuestInterface(SimpleNamespace(engine=engine), None, UUID)


def _dbus_next_reply(guest: GuestInterface) -> bytes:
    body = [{guest_path(UUID): {guest.name: property_variants(guest)}}]
    marshaller = Marshaller("a{oa{sa{sv}}}", body)
    marshaller.marshall()
    return bytes(marshaller.buffer)


def _reply(guest: GuestInterface) -> bytes:
    return bytes(join_object_entries([_object_entry(guest_path(UUID), [guest])]).data)


@pytest.mark.parametrize("sample", [
    SAMPLE,
    {k: v for k, v in SAMPLE.items() if k != "stats_age"},
    {**SAMPLE, "mem_unused": None, "swap_in": -3, "stats_age": 0.0, "custom_big": 2**64,
     "custom_text": "é", "custom_flag": False},
    {**SAMPLE, "io_tune": [VDA], "io_tune_current": [DiskIoTune("vda", None, IoLimits())]},
    {"balloon_cur": 5},
], ids=["full", "no-stats-age", "odd-values", "disks", "sparse"])
def test_an_entry_is_what_dbus_next_would_send(sample):
    guest = _guest(dict(sample))
    assert _reply(guest) == _dbus_next_reply(guest)


def test_controls_and_the_balloon_target_are_in_the_entry():
    guest = _guest(dict(SAMPLE), {"balloon_target": 999424, "io_tune": [
        {"name": "vda", "path": "", "total_iops_sec": 200}], "flag": True, "ratio": 0.5})
    guest.balloon_target = 999424
    reply = _reply(guest)
    assert reply == _dbus_next_reply(guest)
    assert b"total_iops_sec" in reply and b"BalloonTarget" in reply


def test_every_change_shows_in_the_next_entry():
    guest = _guest(dict(SAMPLE))
    first = _reply(guest)
    guest.entity.add_sample({**SAMPLE, "stats_age": 2.5})
    second = _reply(guest)
    assert second != first and second == _dbus_next_reply(guest)
    assert property_variants(guest)["Statistics"].value["stats_age"] == Variant("d", 2.5)


def test_a_kept_entry_takes_new_stats_ages_and_stays_what_dbus_next_would_send():
    guest = _guest(dict(SAMPLE))
    assert _reply(guest) == _dbus_next_reply(guest)
    kept = guest._entry  # noqa: SLF001
    assert set(kept.names) == {"StatsAge", "Statistics/stats_age"}
    assert len(kept.packed) < len(_reply(guest)) / 2
    for age in (2.5, 0.0, 1e9):
        guest.entity.add_sample({**SAMPLE, "stats_age": age})
        assert _reply(guest) == _dbus_next_reply(guest)
        assert guest._entry is kept   # noqa: SLF001 - reused, not written again


def test_any_other_change_writes_the_entry_again():
    guest = _guest(dict(SAMPLE))
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
    guest = _guest(dict(SAMPLE))
    _reply(guest)
    guest.entity.add_sample({k: v for k, v in SAMPLE.items() if k != "stats_age"})
    assert _reply(guest) == _dbus_next_reply(guest)
    assert "Statistics/stats_age" not in guest._entry.names  # noqa: SLF001
    guest.entity.add_sample({**SAMPLE, "stats_age": 7.5})
    assert _reply(guest) == _dbus_next_reply(guest)
    assert property_variants(guest)["Statistics"].value["stats_age"] == Variant("d", 7.5)


def test_items_and_a_dict_of_variants_make_the_same_bytes():
    items = [("n", "x", -1), ("s", "s", "é"), ("d", "a{sv}", [("b", "b", True)]),
             ("l", "aa{sv}", [{"k": Variant("u", 7)}])]
    variants = {"n": Variant("x", -1), "s": Variant("s", "é"),
                "d": Variant("a{sv}", {"b": Variant("b", True)}),
                "l": Variant("aa{sv}", [{"k": Variant("u", 7)}])}
    as_items = marshal_object_entry("/a", [("x.I", [("P", "a{sv}", items)])])
    as_variants = marshal_object_entry("/a", [("x.I", [("P", "a{sv}", variants)])])
    assert as_items == as_variants
    with pytest.raises(WireTypeError):
        marshal_object_entry("/a", [("x.I", [("P", "a{sv}", [("k", "u")])])])
    with pytest.raises(WireTypeError):
        marshal_object_entry("/a", [("x.I", [("P", "a{sv}", [("k", "u", "not a number")])])])
