"""benchmarks/policies/vdsm-style/04-cputune.policy, run with the whole vdsm-style set.

Every expected number is worked out here from vdsm's rule (quota = limit %
x period x host CPUs / vCPUs; at or under 1000 us both quota and period
stretched by 1 + 1000 / quota; -1 and 100000 without a limit), not taken
from an earlier run.  One sample per entity: StatAvg is the value given.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from momservice.controllers.cputune import CpuTuneController
from momservice.errors import InvalidArgument
from momservice.policy import Entity, PolicySet

VDSM_STYLE = Path(__file__).resolve().parents[2] / "benchmarks" / "policies" / "vdsm-style"
GiB = 1024 * 1024


def vdsm_set() -> PolicySet:
    return PolicySet({p.stem: p.read_text() for p in sorted(VDSM_STYLE.glob("*.policy"))})


def host_entity(cpus: int) -> Entity:
    host = Entity.host()
    # Plenty free: the balloon policy grows, KSM stays off.
    host.add_sample({"mem_available": 64 * GiB, "mem_free": 48 * GiB, "mem_unused": 40 * GiB,
                     "cpu_count": cpus, "ksm_run": 0, "ksm_pages_to_scan": 100,
                     "ksm_shareable": GiB, "ksm_merge_across_nodes": 1})
    return host


def guest_entity(name: str, *, vcpus: int | None = 2, limit: int | None = 100,
                 quota: int = -1, period: int = 100000) -> Entity:
    guest = Entity.guest({"name": name, "uuid": f"uuid-{name}", "pid": 0})
    sample = {"balloon_cur": 2 * GiB, "balloon_max": 4 * GiB, "balloon_min": 0,
              "mem_available": 2 * GiB, "mem_unused": GiB // 10, "swap_in": 0, "swap_out": 0,
              "major_fault": 0, "minor_fault": 0}
    if vcpus is not None:
        sample.update(vcpu_count=vcpus, vcpu_quota=quota, vcpu_period=period)
    if limit is not None:
        sample["vcpu_user_limit"] = limit
    guest.add_sample(sample)
    return guest


def controls(host: Entity, *guests: Entity, **params) -> dict[str, dict]:
    result = vdsm_set().evaluate(host, guests, params)
    assert result.error is None and not result.guest_errors, (result.error, result.guest_errors)
    return {g.name: c for g, c in result.guest_controls.items()}


def cpu(control: dict) -> tuple:
    return control.get("vcpu_quota"), control.get("vcpu_period")


@pytest.mark.parametrize("cpus, vcpus, limit, quota, period", [
    # 50 % of 4 host CPUs over 100 ms = 200 ms, for 2 vCPUs: 100 ms each.
    (4, 2, 50, 100000, 100000),
    # 25 % of 8 CPUs = 200 ms per period, over 4 vCPUs.
    (8, 4, 25, 50000, 100000),
    # 10 % of 1 CPU for 8 vCPUs: 1250 us each, above the minimum.
    (1, 8, 10, 1250, 100000),
    # 1 % of 1 CPU = 1000 us for 1 vCPU: not above the minimum, so x2.
    (1, 1, 1, 2000, 200000),
    # 1 % of 2 CPUs over 4 vCPUs = 500 us: x(1 + 1000/500) = x3.
    (2, 4, 1, 1500, 300000),
])
def test_a_limited_guest_gets_vdsms_quota_and_period(cpus, vcpus, limit, quota, period):
    got = controls(host_entity(cpus), guest_entity("g", vcpus=vcpus, limit=limit))["g"]
    assert cpu(got) == pytest.approx((quota, period))
    # ... and the controller would apply them as they are.
    mechanism = CpuTuneController(None)  # type: ignore[arg-type]
    assert (mechanism.check("vcpu_quota", got["vcpu_quota"]),
            mechanism.check("vcpu_period", got["vcpu_period"])) == (quota, period)


def test_without_a_limit_or_when_disabled_quota_is_unlimited():
    limited = guest_entity("limited", limit=50, quota=100000)
    free = guest_entity("free", limit=100, quota=100000, period=200000)
    assert {n: cpu(c) for n, c in controls(host_entity(4), limited, free).items()} == {
        "limited": (100000, 100000), "free": (-1, 100000)}
    disabled = controls(host_entity(4), limited, free, cpuTuneEnabled=0)
    assert {n: cpu(c) for n, c in disabled.items()} == {
        "limited": (-1, 100000), "free": (-1, 100000)}


def test_the_other_vdsm_style_policies_still_decide_for_the_guest():
    got = controls(host_entity(4), guest_entity("g", limit=50))["g"]
    # 02-balloon grows a guest with little free memory when the host is fine.
    assert got["balloon_target"] > 2 * GiB and cpu(got) == (100000, 100000)


def test_a_guest_without_cpu_figures_keeps_its_balloon_control():
    got = controls(host_entity(4), guest_entity("g", vcpus=None, limit=None))["g"]
    assert "vcpu_quota" not in got and "vcpu_period" not in got
    assert "balloon_target" in got


def test_a_limit_of_zero_is_asked_for_and_refused_by_the_controller():
    got = controls(host_entity(1), guest_entity("g", vcpus=1, limit=0))["g"]
    mechanism = CpuTuneController(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="vcpu_period"):
        mechanism.check("vcpu_period", got["vcpu_period"])


def test_a_guest_unlimited_already_is_asked_nothing():
    got = controls(host_entity(4), guest_entity("g", limit=100))["g"]
    assert "vcpu_quota" not in got and "vcpu_period" not in got and "balloon_target" in got
