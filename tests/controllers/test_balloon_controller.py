"""Tests of BalloonController: clamping, skipping, dry run, failures, manual targets.

A fake hypervisor is used because the real libvirt-backed interface
(momservice/hypervisor/libvirt.py) is being written in parallel by someone
else; the fake only records the calls the controller makes (and can refuse
one guest), which is all these tests look at.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from momservice.controllers import BalloonController
from momservice.hypervisor.base import GuestInfo, HypervisorError, HypervisorInterface

GiB = 1048576  # KiB
FLOOR = 262144

A = "aaaaaaaa-0000-0000-0000-000000000001"
B = "bbbbbbbb-0000-0000-0000-000000000002"
C = "cccccccc-0000-0000-0000-000000000003"
NAMES = {A: "web1", B: "db1", C: "cache1"}


class FakeHypervisor(HypervisorInterface):
    """Records set_balloon_target calls; guests in ``refuse`` get a HypervisorError."""

    uri = "fake:///"

    def __init__(self, refuse: set[str] = frozenset()) -> None:
        self.calls: list[tuple[str, int]] = []
        self.refuse = set(refuse)

    @property
    def connected(self) -> bool:
        return True

    async def start(self, listener: Any) -> None:
        pass

    async def close(self) -> None:
        pass

    def guests(self) -> dict[str, GuestInfo]:
        return {}

    async def resync(self) -> None:
        pass

    async def collect(self) -> dict[str, dict[str, Any]]:
        return {}

    async def set_balloon_target(self, uuid: str, kib: int) -> None:
        if uuid in self.refuse:
            raise HypervisorError(f"domain {uuid} refused the balloon change")
        self.calls.append((uuid, kib))


def sample(cur: int = 2 * GiB, lo: int = 0, hi: int = 4 * GiB) -> dict[str, int]:
    return {"balloon_cur": cur, "balloon_min": lo, "balloon_max": hi}


def apply(ctl: BalloonController, requests, samples, names=NAMES) -> dict[str, int]:
    return asyncio.run(ctl.apply(requests, samples, names))


def test_target_below_floor_is_raised_to_floor_and_logged(caplog):
    hv = FakeHypervisor()
    ctl = BalloonController(hv, floor_kib=FLOOR)
    with caplog.at_level(logging.INFO, "momservice.controllers.balloon"):
        result = apply(ctl, {A: {"balloon_target": 100000}}, {A: sample()})
    assert result == {A: FLOOR}
    assert hv.calls == [(A, FLOOR)]
    clamped = [r.getMessage() for r in caplog.records if "clamped" in r.getMessage()]
    assert len(clamped) == 1
    assert "web1" in clamped[0] and A in clamped[0]
    assert "100000" in clamped[0] and str(FLOOR) in clamped[0]


def test_target_below_balloon_min_is_raised_to_balloon_min():
    hv = FakeHypervisor()
    ctl = BalloonController(hv, floor_kib=FLOOR)
    result = apply(ctl, {A: {"balloon_target": 300000}}, {A: sample(lo=GiB)})
    assert result == {A: GiB}
    assert hv.calls == [(A, GiB)]


def test_floor_wins_over_a_smaller_balloon_min():
    hv = FakeHypervisor()
    ctl = BalloonController(hv, floor_kib=FLOOR)
    result = apply(ctl, {A: {"balloon_target": 0}}, {A: sample(lo=1024)})
    assert result == {A: FLOOR}


def test_target_above_balloon_max_is_lowered_and_logged(caplog):
    hv = FakeHypervisor()
    ctl = BalloonController(hv)
    with caplog.at_level(logging.INFO, "momservice.controllers.balloon"):
        result = apply(ctl, {B: {"balloon_target": 8 * GiB}}, {B: sample(hi=4 * GiB)})
    assert result == {B: 4 * GiB}
    assert hv.calls == [(B, 4 * GiB)]
    clamped = [r.getMessage() for r in caplog.records if "clamped" in r.getMessage()]
    assert len(clamped) == 1
    assert "db1" in clamped[0] and str(8 * GiB) in clamped[0] and str(4 * GiB) in clamped[0]


def test_target_in_range_is_sent_unchanged_and_not_reported_as_clamped(caplog):
    hv = FakeHypervisor()
    ctl = BalloonController(hv)
    with caplog.at_level(logging.INFO, "momservice.controllers.balloon"):
        result = apply(ctl, {A: {"balloon_target": 3 * GiB}}, {A: sample()})
    assert result == {A: 3 * GiB}
    assert hv.calls == [(A, 3 * GiB)]
    assert not [r for r in caplog.records if "clamped" in r.getMessage()]
    # One INFO line for the applied change, naming guest, new and old size.
    applied = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Set balloon")]
    assert applied == [f"Set balloon of guest web1 ({A}) to {3 * GiB} KiB (was {2 * GiB} KiB)"]


def test_a_small_guest_below_the_floor_keeps_its_memory():
    # balloon_max under the floor: the range shrinks to balloon_max alone.
    hv = FakeHypervisor()
    ctl = BalloonController(hv, floor_kib=FLOOR)
    result = apply(ctl, {A: {"balloon_target": 1000}},
                   {A: sample(cur=100000, hi=200000)})
    assert result == {A: 200000}


def test_target_equal_to_current_is_not_sent():
    hv = FakeHypervisor()
    ctl = BalloonController(hv)
    result = apply(ctl, {A: {"balloon_target": 2 * GiB},
                         # clamps to balloon_max, which is the current size
                         B: {"balloon_target": 9 * GiB},
                         # float that rounds down to the current size
                         C: {"balloon_target": 2 * GiB + 0.7}},
                   {A: sample(), B: sample(cur=4 * GiB), C: sample()})
    assert result == {}
    assert hv.calls == []


def test_dry_run_sends_nothing_but_returns_the_decision(caplog):
    hv = FakeHypervisor()
    ctl = BalloonController(hv, dry_run=True)
    with caplog.at_level(logging.INFO, "momservice.controllers.balloon"):
        result = apply(ctl, {A: {"balloon_target": 3 * GiB},
                             B: {"balloon_target": 10},
                             C: {"balloon_target": 2 * GiB}},
                       {A: sample(), B: sample(), C: sample()})
    assert hv.calls == []
    assert result == {A: 3 * GiB, B: FLOOR}
    would = [r.getMessage() for r in caplog.records if "would set" in r.getMessage()]
    assert len(would) == 2
    assert any("web1" in m and str(3 * GiB) in m for m in would)


def test_hypervisor_error_on_one_guest_does_not_stop_the_others(caplog):
    hv = FakeHypervisor(refuse={B})
    ctl = BalloonController(hv)
    with caplog.at_level(logging.WARNING, "momservice.controllers.balloon"):
        result = apply(ctl, {A: {"balloon_target": GiB},
                             B: {"balloon_target": GiB},
                             C: {"balloon_target": GiB}},
                       {A: sample(), B: sample(), C: sample()})
    assert result == {A: GiB, C: GiB}
    assert hv.calls == [(A, GiB), (C, GiB)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "db1" in warnings[0].getMessage() and "refused" in warnings[0].getMessage()


def test_float_targets_are_rounded_down():
    hv = FakeHypervisor()
    ctl = BalloonController(hv)
    result = apply(ctl, {A: {"balloon_target": 1500000.99}}, {A: sample()})
    assert result == {A: 1500000}
    assert hv.calls == [(A, 1500000)]
    assert type(hv.calls[0][1]) is int


@pytest.mark.parametrize("bad", ["lots", None, -5, -0.5, float("nan"), float("inf"), True])
def test_unusable_targets_are_logged_and_skipped(bad, caplog):
    hv = FakeHypervisor()
    ctl = BalloonController(hv)
    with caplog.at_level(logging.WARNING, "momservice.controllers.balloon"):
        result = apply(ctl, {A: {"balloon_target": bad}, C: {"balloon_target": GiB}},
                       {A: sample(), C: sample()})
    assert result == {C: GiB}
    assert hv.calls == [(C, GiB)]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "web1" in messages[0] and repr(bad) in messages[0]


def test_guests_without_target_or_without_range_are_skipped(caplog):
    hv = FakeHypervisor()
    ctl = BalloonController(hv)
    with caplog.at_level(logging.WARNING, "momservice.controllers.balloon"):
        result = apply(ctl, {A: {}, B: {"balloon_target": GiB}, C: {"balloon_target": GiB}},
                       {A: sample(), B: {"balloon_cur": 2 * GiB}})
    assert result == {}
    assert hv.calls == []
    # B has no balloon_max, C no sample at all: both are logged.
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert any("db1" in m for m in messages) and any("cache1" in m for m in messages)


def test_negative_floor_is_refused():
    with pytest.raises(ValueError, match="floor"):
        BalloonController(FakeHypervisor(), floor_kib=-1)


# -- manual targets ---------------------------------------------------------


def test_set_target_in_range_is_sent():
    hv = FakeHypervisor()
    ctl = BalloonController(hv)
    assert asyncio.run(ctl.set_target(A, 3 * GiB, sample(lo=GiB))) == 3 * GiB
    assert hv.calls == [(A, 3 * GiB)]


def test_set_target_at_the_bounds_is_accepted():
    hv = FakeHypervisor()
    ctl = BalloonController(hv)
    asyncio.run(ctl.set_target(A, GiB, sample(lo=GiB)))
    asyncio.run(ctl.set_target(A, 4 * GiB, sample(lo=GiB)))
    assert hv.calls == [(A, GiB), (A, 4 * GiB)]


@pytest.mark.parametrize("kib, lo, message", [
    (GiB - 1, GiB, rf"{GiB - 1} KiB .* outside .* {GiB}\.\.{4 * GiB} KiB"),
    (100, 0, rf"100 KiB .* outside .* {FLOOR}\.\.{4 * GiB} KiB"),
    (4 * GiB + 1, 0, rf"{4 * GiB + 1} KiB .* outside .* {FLOOR}\.\.{4 * GiB} KiB"),
])
def test_set_target_outside_the_range_is_refused_not_clamped(kib, lo, message):
    hv = FakeHypervisor()
    ctl = BalloonController(hv, floor_kib=FLOOR)
    with pytest.raises(ValueError, match=message):
        asyncio.run(ctl.set_target(A, kib, sample(lo=lo)))
    assert hv.calls == []


@pytest.mark.parametrize("bad", [-1, "1G", None])
def test_set_target_rejects_non_sizes(bad):
    hv = FakeHypervisor()
    with pytest.raises(ValueError, match="non-negative number of KiB"):
        asyncio.run(BalloonController(hv).set_target(A, bad, sample()))
    assert hv.calls == []


def test_set_target_needs_balloon_max():
    with pytest.raises(ValueError, match="balloon_max"):
        asyncio.run(BalloonController(FakeHypervisor()).set_target(A, GiB, {"balloon_cur": GiB}))


def test_set_target_equal_to_current_or_dry_run_sends_nothing():
    hv = FakeHypervisor()
    assert asyncio.run(BalloonController(hv).set_target(A, 2 * GiB, sample())) == 2 * GiB
    assert asyncio.run(BalloonController(hv, dry_run=True).set_target(A, GiB, sample())) == GiB
    assert hv.calls == []


def test_set_target_lets_hypervisor_errors_through():
    hv = FakeHypervisor(refuse={A})
    with pytest.raises(HypervisorError):
        asyncio.run(BalloonController(hv).set_target(A, GiB, sample()))


# -- the real libvirt-backed interface, on libvirt's test driver --------------


class _Listener:
    def guest_added(self, info: GuestInfo) -> None:
        pass

    def guest_removed(self, uuid: str) -> None:
        pass

    def connection_changed(self, connected: bool) -> None:
        pass


def test_with_libvirt_hypervisor_on_the_test_driver(caplog):
    """test:///default has one running domain, "test"; its state lives in this
    connection only, so it is read back through the interface's own connection."""
    libvirt_hv = pytest.importorskip("momservice.hypervisor.libvirt")
    missing = "dddddddd-0000-0000-0000-000000000004"

    async def body() -> None:
        hv = libvirt_hv.LibvirtHypervisor("test:///default")
        await hv.start(_Listener())
        try:
            # No domain object is kept: one would keep the connection (and
            # its libvirt event handles) alive after close().
            def current_kib() -> int:
                return hv.connection.lookupByName("test").info()[2]

            uuid = hv.connection.lookupByName("test").UUIDString()
            ctl = BalloonController(hv, floor_kib=FLOOR)
            sample_now = (await hv.collect())[uuid]
            high = sample_now["balloon_max"]
            target = high // 2 + 1  # differs from the domain's current size
            assert target != sample_now["balloon_cur"]

            # A guest libvirt does not know fails alone; "test" is resized.
            with caplog.at_level(logging.WARNING, "momservice.controllers.balloon"):
                applied = await ctl.apply(
                    {missing: {"balloon_target": GiB}, uuid: {"balloon_target": target + 0.9}},
                    {missing: sample(), uuid: sample_now}, {uuid: "test", missing: "ghost"})
            assert applied == {uuid: target}
            assert current_kib() == target
            assert [r for r in caplog.records if "ghost" in r.getMessage()]

            # Clamped down to balloon_max, then nothing to send at that size.
            sample_now = (await hv.collect())[uuid]
            assert sample_now["balloon_cur"] == target
            assert await ctl.apply({uuid: {"balloon_target": 2 * high}}, {uuid: sample_now}) \
                == {uuid: high}
            assert current_kib() == high
            sample_now = (await hv.collect())[uuid]
            assert await ctl.apply({uuid: {"balloon_target": high}}, {uuid: sample_now}) == {}

            # Manual targets: refused outside the range, applied inside it.
            with pytest.raises(ValueError, match="outside"):
                await ctl.set_target(uuid, FLOOR - 1, sample_now)
            assert current_kib() == high
            assert await ctl.set_target(uuid, FLOOR, sample_now) == FLOOR
            assert current_kib() == FLOOR
        finally:
            await hv.close()

    asyncio.run(asyncio.wait_for(body(), 60))
