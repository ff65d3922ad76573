"""RefusalLog: one warning per guest, control and reason."""

from __future__ import annotations

import logging

from momservice.controllers.refusals import RefusalLog

log = logging.getLogger("tests.refusals")


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == log.name]


def test_same_reason_is_logged_once_and_a_new_one_again(caplog):
    caplog.set_level(logging.WARNING, logger=log.name)
    refusals = RefusalLog(log, "CpuTune")
    for _ in range(3):
        refusals.refused("u1", "web", "vcpu_quota", "below 1000", 10)
    refusals.refused("u2", None, "vcpu_quota", "below 1000", 10)
    refusals.refused("u1", "web", "vcpu_quota", "not a number", "x")
    messages = _warnings(caplog)
    assert len(messages) == 3
    assert "web (u1)" in messages[0] and "below 1000" in messages[0] and "10" in messages[0]
    assert messages[1].startswith("Guest u2:")
    assert "not a number" in messages[2]


def test_accepted_and_forgotten_guests_are_told_again(caplog):
    caplog.set_level(logging.WARNING, logger=log.name)
    refusals = RefusalLog(log, "IoTune")
    refusals.refused("u1", "db", "io_tune", "no such disk")
    refusals.accepted("u1", "io_tune")
    refusals.refused("u1", "db", "io_tune", "no such disk")
    refusals.refused("u2", "gone", "io_tune", "no such disk")
    refusals.forget({"u1"})
    refusals.refused("u2", "gone", "io_tune", "no such disk")
    refusals.refused("u1", "db", "io_tune", "no such disk")
    assert len(_warnings(caplog)) == 4
