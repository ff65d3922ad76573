"""How an Entity keeps its samples: values shared between samples, rows as
long as the sample's fields, the schema following the fields a sample has,
and the revision that moves only with a signalled change."""

from __future__ import annotations

from momservice.policy import Entity
from momservice.policy.entity import GUEST_SCHEMA

GUEST_STATS = {
    "balloon_cur": 1_000_000, "balloon_max": 2_000_000, "balloon_min": 0,
    "mem_available": 2_000_000, "mem_unused": 500_000, "major_fault": 0,
    "minor_fault": 0, "swap_in": 0, "swap_out": 0, "stats_age": 1.5,
}


def fresh(sample: dict) -> dict:
    """``sample`` with every number a new object of the same value, as each
    call of a collector gives."""
    return {k: (type(v)(str(v)) if isinstance(v, (int, float)) and not isinstance(v, bool)
                else v) for k, v in sample.items()}


def guest(history_length: int = 10) -> Entity:
    return Entity.guest({"name": "vm", "uuid": "u-vm", "pid": 1}, history_length=history_length)


def avg(entity: Entity, field: str) -> float:
    return entity.stat_avg(field)


def test_an_equal_value_of_the_same_type_is_kept_as_the_newest_ones_object():
    entity = guest()
    entity.add_sample(fresh(GUEST_STATS))
    first = entity.latest
    entity.add_sample(fresh({**GUEST_STATS, "mem_unused": 400_000}))
    assert entity.latest["balloon_cur"] is first["balloon_cur"]
    assert entity.latest["mem_unused"] == 400_000
    assert entity.latest["mem_unused"] is not first["mem_unused"]
    # The history holds those objects too: one number for all the rows.
    index = entity.schema.index["balloon_max"]
    assert entity.history[0][index] is entity.history[1][index]


def test_an_equal_value_of_another_type_keeps_the_samples_type():
    entity = guest()
    entity.add_sample({**GUEST_STATS, "mem_unused": 500_000})
    entity.add_sample({**GUEST_STATS, "mem_unused": 500_000.0})
    assert type(entity.latest["mem_unused"]) is float
    entity.add_sample({**GUEST_STATS, "mem_unused": 500_000})
    assert type(entity.latest["mem_unused"]) is int


def test_the_same_sample_again_is_one_row_and_the_callers_dict_is_not_kept():
    entity = guest()
    sample = dict(GUEST_STATS)
    entity.add_sample(sample)
    entity.add_sample(fresh(GUEST_STATS))
    assert entity.history[0] is entity.history[1]
    sample["balloon_cur"] = 1
    assert entity.latest["balloon_cur"] == 1_000_000


def test_a_row_holds_the_samples_fields_only():
    entity = guest()
    entity.add_sample(GUEST_STATS)
    assert len(entity.history[0]) == len(GUEST_STATS) < len(entity.schema.fields)
    assert entity.stat("rss") is None   # known, absent: nil
    assert avg(entity, "rss") == 0.0


def test_guests_with_the_same_fields_share_one_schema():
    a, b = guest(), guest()
    a.add_sample(GUEST_STATS)
    b.add_sample(fresh(GUEST_STATS))
    assert a.schema is b.schema
    assert a.schema.known == GUEST_SCHEMA.known


def test_fields_coming_and_going_keep_the_history_right():
    entity = guest()
    entity.add_sample({**GUEST_STATS, "rss": 100})
    without = {k: v for k, v in GUEST_STATS.items() if k != "mem_unused"}
    entity.add_sample({**without, "rss": 200})
    assert entity.stat("mem_unused") is None
    assert avg(entity, "mem_unused") == 500_000.0    # the one sample that had it
    assert avg(entity, "rss") == 150.0
    # Another order of the same fields, and a field no collector declares.
    reordered = dict(reversed(list({**GUEST_STATS, "rss": 300}.items())))
    entity.add_sample(reordered)
    entity.add_sample({**GUEST_STATS, "rss": 400, "vendor_thing": 7})
    assert avg(entity, "rss") == 250.0
    assert avg(entity, "mem_unused") == 500_000.0
    assert entity.stat("vendor_thing") == 7
    entity.add_sample(GUEST_STATS)
    assert entity.stat("vendor_thing") is None   # met once: known for good
    assert avg(entity, "vendor_thing") == 7.0
    assert [row[entity.schema.index["balloon_cur"]] for row in entity.history] \
        == [1_000_000] * 5


def test_completeness_follows_a_required_field():
    entity = guest()
    entity.add_sample(GUEST_STATS)
    assert entity.is_complete()
    entity.add_sample({**GUEST_STATS, "mem_available": None})
    assert not entity.is_complete()
    entity.add_sample({**GUEST_STATS, "stats_age": 9.0, "mem_available": None})
    assert not entity.is_complete()
    entity.add_sample(GUEST_STATS)
    assert entity.is_complete()


def test_the_revision_moves_with_signalled_changes_only():
    entity = guest()
    entity.add_sample(GUEST_STATS)
    first = entity.revision
    for age in (2.5, 3.5):
        entity.add_sample(fresh({**GUEST_STATS, "stats_age": age}))
    assert entity.revision == first
    entity.add_sample({**GUEST_STATS, "balloon_cur": 900_000})
    assert entity.revision > first
    seen = entity.revision
    entity.add_sample({**GUEST_STATS, "balloon_cur": 900_000, "rss": 5})   # a new field
    assert entity.revision > seen
    seen = entity.revision
    entity.merge({"virtio_mem_requested": 1024})
    assert entity.latest["virtio_mem_requested"] == 1024
    assert entity.revision > seen
    seen = entity.revision
    entity.add_sample({**GUEST_STATS, "balloon_cur": 900_000, "rss": 5})  # merged value gone
    assert entity.revision > seen


def test_a_merge_leaves_the_history_as_sampled():
    entity = guest()
    entity.add_sample({**GUEST_STATS, "rss": 100})
    entity.merge({"rss": 300})
    assert entity.stat("rss") == 300
    assert avg(entity, "rss") == 100.0
