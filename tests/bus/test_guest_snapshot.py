"""What a guest keeps of what it published: a GuestSnapshot of the engine's
objects, not a copy of its values (Published.publish_changes).

PropertiesChanged must still carry exactly what changed: the guest is
built on a real Entity and a stand-in engine (no bus is needed to see what
it would emit; the signal itself is dbus-next's and tested on a real bus in
test_bus_service.py).
"""

from __future__ import annotations

from types import SimpleNamespace

from dbus_next import Variant

from momservice.bus.interfaces import GuestInterface
from momservice.policy.entity import Entity, GUEST_SCHEMA

UUID = "0b70676a-bf21-531e-a6d1-56255d1820a9"
SAMPLE = {"balloon_cur": 1048576, "balloon_max": 2097152, "mem_unused": 524288,
          "stats_age": 1.0}


def _guest() -> tuple[GuestInterface, list[dict]]:
    entity = Entity("guest", {"name": "web", "uuid": UUID}, schema=GUEST_SCHEMA)
    entity.add_sample(dict(SAMPLE))
    engine = SimpleNamespace(guests={UUID: entity}, last_evaluation=None)
    guest = GuestInterface(SimpleNamespace(engine=engine), None, UUID)
    sent: list[dict] = []
    guest.emit_properties_changed = sent.append
    guest.mark_published()
    return guest, sent


def test_nothing_changed_nothing_sent_though_stats_age_moves():
    guest, sent = _guest()
    guest.entity.add_sample({**SAMPLE, "stats_age": 2.0})
    assert guest.publish_changes() == {} and sent == []
    # What it keeps refers to the engine's own newest sample: no copy.
    assert guest._published.latest is guest.entity.latest   # noqa: SLF001


def test_a_statistic_change_sends_it_and_statistics_whole():
    guest, sent = _guest()
    guest.entity.add_sample({**SAMPLE, "mem_unused": 1000, "stats_age": 2.0})
    guest.publish_changes()
    (changed,) = sent
    assert set(changed) == {"MemUnused", "Statistics"}
    assert changed["MemUnused"] == 1000
    assert changed["Statistics"]["stats_age"] == Variant("d", 2.0)


def test_new_props_controls_and_target_are_each_a_change():
    guest, sent = _guest()
    guest.entity.props = {**guest.entity.props, "name": "db"}   # as the engine replaces them
    guest.service.engine.last_evaluation = SimpleNamespace(
        guest_controls={UUID: {"balloon_target": 999424}})
    guest.balloon_target = 999424
    guest.publish_changes()
    (changed,) = sent
    assert set(changed) == {"Name", "Controls", "BalloonTarget"}
    assert changed["Controls"] == {"balloon_target": Variant("x", 999424)}
    assert guest.publish_changes() == {} and len(sent) == 1
    # The same controls from a later evaluation (a new dict) are no change.
    guest.service.engine.last_evaluation = SimpleNamespace(
        guest_controls={UUID: {"balloon_target": 999424}})
    assert guest.publish_changes() == {}
