"""CpuTuneController: ranges, only what changed, refusals once per guest, by hand.

A recording hypervisor stands in for libvirt here: libvirt's test driver
has no vCPU scheduler parameters (it refuses vcpu_quota), so what the
controller decides is checked against the calls it makes; applying them
to a real guest's cgroup is tests/e2e/test_cputune.py's.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from momservice.controllers import CpuTuneController, Decision
from momservice.controllers.cputune import check_period, check_quota
from momservice.errors import InvalidArgument
from momservice.hypervisor.base import (GuestInfo, HypervisorError, HypervisorInterface,
                                        HypervisorUnsupported)

A = "aaaaaaaa-0000-0000-0000-000000000001"
B = "bbbbbbbb-0000-0000-0000-000000000002"
NAMES = {A: "web1", B: "db1"}
UNTUNED = {"vcpu_quota": -1, "vcpu_period": 100000, "vcpu_user_limit": 100, "vcpu_count": 2}


class RecordingHypervisor(HypervisorInterface):
    """Records set_cpu_tune calls; ``refuse`` maps a UUID to the error it gets."""

    uri = "recording:///"

    def __init__(self, refuse: dict[str, HypervisorError] | None = None) -> None:
        self.calls: list[tuple[str, int | None, int | None]] = []
        self.refuse = dict(refuse or {})

    @property
    def connected(self) -> bool:
        return True

    async def start(self, listener: Any) -> None: ...

    async def close(self) -> None: ...

    def guests(self) -> dict[str, GuestInfo]:
        return {u: GuestInfo(u, n) for u, n in NAMES.items()}

    async def resync(self) -> None: ...

    async def collect(self) -> dict[str, dict[str, Any]]:
        return {}

    async def set_balloon_target(self, uuid: str, kib: int) -> None: ...

    async def set_cpu_tune(self, uuid: str, *, quota: int | None = None,
                           period: int | None = None) -> None:
        if uuid in self.refuse:
            raise self.refuse[uuid]
        self.calls.append((uuid, quota, period))


def decision(controls: dict[str, dict[str, Any]],
             samples: dict[str, dict[str, Any]] | None = None) -> Decision:
    return Decision(guest_controls=controls,
                    guest_samples=samples if samples is not None else
                    {u: dict(UNTUNED) for u in controls},
                    guest_names=NAMES)


def test_sends_the_changed_values_rounded_in_one_call(run):
    hv = RecordingHypervisor()
    controller = CpuTuneController(hv)
    applied = run(controller.act(decision({
        A: {"vcpu_quota": 45000.4, "vcpu_period": 100000.0},   # the period is the same
        B: {"vcpu_quota": 2250.0, "vcpu_period": 150000.0}})))
    assert hv.calls == [(A, 45000, None), (B, 2250, 150000)]
    assert applied == {A: {"vcpu_quota": 45000}, B: {"vcpu_quota": 2250, "vcpu_period": 150000}}
    assert controller.operations == 2


def test_what_the_guest_has_already_is_not_sent(run):
    # vdsm's policy resets every unlimited guest at every evaluation.
    hv = RecordingHypervisor()
    controller = CpuTuneController(hv)
    applied = run(controller.act(decision({A: {"vcpu_quota": -1, "vcpu_period": 100000},
                                           B: {"balloon_target": 1024}})))
    assert hv.calls == [] and applied == {}


def test_without_the_guests_figures_the_last_value_sent_counts(run):
    # GuestCpuTune not configured: the samples do not say what the guest has.
    hv = RecordingHypervisor()
    controller = CpuTuneController(hv)
    for _ in range(3):
        run(controller.act(decision({A: {"vcpu_quota": -1, "vcpu_period": 100000}},
                                    samples={A: {"balloon_cur": 1}})))
    assert hv.calls == [(A, -1, 100000)]


def test_out_of_range_is_refused_once_per_guest_and_the_rest_applies(run, caplog):
    caplog.set_level(logging.INFO)
    hv = RecordingHypervisor()
    controller = CpuTuneController(hv)
    for _ in range(3):
        run(controller.act(decision({A: {"vcpu_quota": 500, "vcpu_period": 1700000.0},
                                     B: {"vcpu_quota": 1000}})))
    assert hv.calls == [(B, 1000, None)]
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 2, refusals
    assert any("web1" in m and "vcpu_quota 500" in m and "1000..17592186044415" in m
               for m in refusals)
    assert any("web1" in m and "vcpu_period 1700000" in m and "1000..1000000" in m
               for m in refusals)


@pytest.mark.parametrize("value", ["50%", None, float("inf"), True])
def test_a_value_that_is_not_a_number_is_refused(run, value, caplog):
    hv = RecordingHypervisor()
    run(CpuTuneController(hv).act(decision({A: {"vcpu_quota": value}})))
    assert hv.calls == []
    assert "must be a number" in caplog.text


def test_a_guest_without_cpu_tuning_is_told_once_and_the_others_go_on(run, caplog):
    hv = RecordingHypervisor(refuse={A: HypervisorUnsupported("no cgroup cpu controller")})
    controller = CpuTuneController(hv)
    asked = []
    real_set = hv.set_cpu_tune

    async def counting(uuid: str, **kwargs: Any) -> None:
        asked.append(uuid)
        await real_set(uuid, **kwargs)
    hv.set_cpu_tune = counting  # type: ignore[method-assign]
    applied = [run(controller.act(decision({A: {"vcpu_quota": 5000}, B: {"vcpu_quota": 6000}},
                                           {A: UNTUNED, B: dict(UNTUNED, vcpu_quota=n)})))
               for n in (-1, 6000, 6000)]
    assert applied == [{B: {"vcpu_quota": 6000}}, {}, {}]
    # The guest without CPU tuning was asked once, not at every evaluation.
    assert asked == [A, B]
    said = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(said) == 1 and "no CPU tuning" in said[0] and "no cgroup cpu" in said[0]
    # Another value is asked for again.
    run(controller.act(decision({A: {"vcpu_quota": 7000}}, {A: UNTUNED})))
    assert asked == [A, B, A]


def test_dry_run_sends_nothing(run, caplog):
    caplog.set_level(logging.INFO)
    hv = RecordingHypervisor()
    applied = run(CpuTuneController(hv, dry_run=True).act(decision({A: {"vcpu_quota": 5000}})))
    assert hv.calls == [] and applied == {A: {"vcpu_quota": 5000}}
    assert "Dry run: would set CPU tuning of guest web1" in caplog.text


def test_by_hand_checks_everything_first_and_sends_even_the_same(run):
    hv = RecordingHypervisor()
    controller = CpuTuneController(hv)
    assert run(controller.set_by_hand(A, {"quota": -1, "period": 100000}, UNTUNED, "web1")) \
        == {"vcpu_quota": -1, "vcpu_period": 100000}
    assert hv.calls == [(A, -1, 100000)]
    for bad in ({"quota": 10}, {"period": 2000000}, {"share": 5}, {}):
        with pytest.raises(InvalidArgument):
            run(controller.set_by_hand(A, bad, UNTUNED, "web1"))
    assert len(hv.calls) == 1


def test_by_hand_a_refusal_of_the_hypervisor_reaches_the_caller(run):
    hv = RecordingHypervisor(refuse={A: HypervisorError("cgroup CPU controller is not mounted")})
    with pytest.raises(HypervisorError, match="not mounted"):
        run(CpuTuneController(hv).set_by_hand(A, {"quota": 5000}, UNTUNED))


def test_hypervisors_without_cpu_tuning_say_so():
    class Bare(RecordingHypervisor):
        set_cpu_tune = HypervisorInterface.set_cpu_tune

    import asyncio
    with pytest.raises(HypervisorUnsupported):
        asyncio.run(Bare().set_cpu_tune(A, quota=5000))


def test_a_sample_older_than_the_change_does_not_resend_it_but_a_newer_one_does(run):
    hv = RecordingHypervisor()
    controller = CpuTuneController(hv)
    ask = {A: {"vcpu_quota": 5000}}
    run(controller.act(decision(ask)))                                   # sent
    run(controller.act(decision(ask)))                                   # sample still -1
    run(controller.act(decision(ask, {A: dict(UNTUNED, vcpu_quota=5000)})))  # caught up
    # Someone else set it back: the guest's figure is news, the policy's value goes again.
    run(controller.act(decision(ask, {A: dict(UNTUNED, vcpu_quota=7000)})))
    assert hv.calls == [(A, 5000, None), (A, 5000, None)]


@pytest.mark.parametrize("period, ok", [(999, False), (1000, True), (1000000, True),
                                        (1000001, False), (0, False)])
def test_period_range(period, ok):
    assert (check_period(period) is None) is ok


@pytest.mark.parametrize("quota, ok", [(-1, True), (0, False), (999, False), (1000, True),
                                       (17592186044415, True), (17592186044416, False),
                                       (-2, False)])
def test_quota_range(quota, ok):
    assert (check_quota(quota) is None) is ok
