"""The simulation model's invariants: memory accounting, balloons, swap, cache, KSM, seeds."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from momservice.simulator.guest_model import MiB
from momservice.simulator.scenario import GuestSpec, Scenario, default_scenario, workload
from momservice.simulator.simulation import Simulation

EPS = 1e-6


def tight_scenario(**changes) -> Scenario:
    """Four guests that do not fit: a spike, a ramp, a steady and an idle one."""
    guests = (
        GuestSpec("spiky", 4096, workload("spike", {"level": 0.3, "peak": 0.9, "at": 20,
                                                     "length": 120, "every": 300}),
                  shareable=0.2, swap_mib=2048),
        GuestSpec("ramping", 4096, workload("ramp", {"start": 0.2, "end": 0.8, "length": 300}),
                  shareable=0.1, min_guarantee_mib=512),
        GuestSpec("steady", 2048, workload("steady", {"level": 0.5}), shareable=0.3,
                  io_mib_s=20.0),
        GuestSpec("idle", 2048, workload("idle", {"bursts_per_hour": 30}), shareable=0.0),
    )
    scenario = Scenario(name="tight", host_memory_mib=7168, guests=guests, seed=5,
                        host_swap_mib=2048, ksm_run=1)
    return replace(scenario, **changes)


def drive(sim: Simulation, seconds: float, step: float, rng: random.Random,
          check=None) -> None:
    """Advance ``sim``, now and then setting random balloon targets; ``check`` after each step."""
    while sim.now < seconds:
        if rng.random() < 0.3:
            uuid = rng.choice(list(sim.guests))
            guest = sim.guests[uuid]
            sim.set_balloon_target(uuid, int(rng.uniform(0.0, 1.1) * guest.max_kib))
        before = {u: (g.balloon_cur, g.balloon_target, g.swapped, g.swap_out_kib)
                  for u, g in sim.guests.items()}
        sim.step(step)
        if check is not None:
            check(sim, before, step)


# -- memory accounting ------------------------------------------------------------


def check_accounting(sim: Simulation, before, dt: float) -> None:
    host, ksm = sim.host, sim.ksm
    resident = sum(g.touched + g.qemu_overhead for g in sim.guests.values())
    assert host.used == pytest.approx(resident + host.overhead - ksm.savings_kib, abs=1)
    assert ksm.savings_kib <= sum(g.touched * g.shareable for g in sim.guests.values()) + 4
    if host.oom_kib == 0:
        # RAM holds what is not swapped, the page cache and the unused rest.
        assert host.in_ram + host.cache + host.unused == pytest.approx(host.total, abs=1)
    assert host.unused >= -EPS and host.cache >= -EPS and host.swap_usage >= -EPS
    for g in sim.guests.values():
        parts = g.reserved + g.kernel + g.anon + g.cache + g.free
        assert parts == pytest.approx(g.balloon_cur, abs=EPS)
        assert g.anon >= -EPS and g.cache >= -EPS and g.free >= -EPS
        assert g.cache <= g.cache_max + EPS
        # The working set is in RAM or in swap (or, beyond swap, lost to the OOM killer).
        assert g.anon + g.swapped + g.oom_kib == pytest.approx(g.working_set, abs=EPS)
        assert g.in_use - EPS <= g.touched <= g.balloon_cur + EPS


def test_memory_is_conserved_step_to_step():
    sim = Simulation(tight_scenario())
    drive(sim, 900, 2.5, random.Random(1), check_accounting)
    assert sim.host.swap_usage > 0 or any(g.swapped for g in sim.guests.values()), \
        "the scenario is meant to run short of memory"


def test_fresh_guest_statistics_add_up():
    sim = Simulation(tight_scenario())
    for _ in range(40):
        sim.step(5.0)    # the stats period: every sample is fresh
        for uuid, sample in sim.guest_samples().items():
            g = sim.guests[uuid]
            assert sample["stats_age"] == pytest.approx(0.0, abs=1e-6)
            assert sample["mem_available"] == int(g.balloon_cur - g.reserved)
            used = sample["mem_available"] - sample["mem_unused"] - sample["disk_caches"]
            assert used == pytest.approx(g.kernel + g.anon, abs=3)
            assert sample["mem_usable"] == pytest.approx(
                sample["mem_unused"] + sample["disk_caches"], abs=2)
            assert 0 <= sample["balloon_cur"] <= sample["balloon_max"]


def test_guest_statistics_age_between_driver_updates():
    sim = Simulation(tight_scenario(stats_period=10.0))
    sim.step(10.0)
    uuid = next(iter(sim.guests))
    first = sim.guest_samples()[uuid]
    sim.set_balloon_target(uuid, sim.guests[uuid].max_kib // 2)
    sim.step(4.0)
    later = sim.guest_samples()[uuid]
    assert later["stats_age"] == pytest.approx(4.0)
    assert later["mem_unused"] == first["mem_unused"]       # not refreshed yet
    assert later["balloon_cur"] < first["balloon_cur"]      # the host side is current
    sim.step(6.0)
    assert sim.guest_samples()[uuid]["stats_age"] == pytest.approx(0.0, abs=1e-6)


# -- balloons --------------------------------------------------------------------------


def check_balloon(sim: Simulation, before, dt: float) -> None:
    for uuid, g in sim.guests.items():
        cur0, target, _, _ = before[uuid]
        assert 0 <= g.balloon_cur <= g.max_kib
        rate = g.deflate_rate if cur0 < target else g.balloon_rate
        assert abs(g.balloon_cur - cur0) <= rate * dt + EPS
        if cur0 >= target:
            assert g.balloon_cur >= target - EPS      # never overshoots downward
        else:
            assert g.balloon_cur <= target + EPS      # nor upward


def test_balloon_stays_in_range_and_never_overshoots():
    sim = Simulation(tight_scenario())
    drive(sim, 900, 1.5, random.Random(2), check_balloon)


def test_targets_are_clamped_to_zero_and_maximum():
    sim = Simulation(tight_scenario())
    uuid, guest = next(iter(sim.guests.items()))
    assert sim.set_balloon_target(uuid, guest.max_kib * 3) == guest.max_kib
    assert sim.set_balloon_target(uuid, -5) == 0
    with pytest.raises(KeyError):
        sim.set_balloon_target("no-such-guest", 1)


def test_balloon_moves_at_the_modelled_rate():
    scenario = tight_scenario(balloon_rate_mib_s=100.0, balloon_deflate_rate_mib_s=150.0)
    sim = Simulation(scenario)
    uuid = next(u for u, g in sim.guests.items() if g.name == "steady")
    guest = sim.guests[uuid]
    # Inflating through free memory and page cache only: at the full rate.
    sim.set_balloon_target(uuid, int(guest.balloon_cur - 300 * MiB))
    start = guest.balloon_cur
    sim.step(1.0)
    assert start - guest.balloon_cur == pytest.approx(100 * MiB)
    sim.step(1.0)
    assert start - guest.balloon_cur == pytest.approx(200 * MiB)
    sim.step(5.0)
    assert guest.balloon_cur == pytest.approx(start - 300 * MiB)   # and stops there
    # Deflating: at the full deflation rate.
    sim.set_balloon_target(uuid, guest.max_kib)
    sim.step(1.0)
    assert guest.balloon_cur == pytest.approx(start - 150 * MiB)


def test_inflating_into_the_working_set_is_bounded_by_swap_speed_and_space():
    sim = Simulation(tight_scenario(guest_swap_rate_mib_s=10.0))
    uuid = next(u for u, g in sim.guests.items() if g.name == "steady")
    guest = sim.guests[uuid]
    sim.set_balloon_target(uuid, 0)
    sim.step(30.0)
    floor = guest.reserved + guest.kernel + guest.watermark + guest.working_set - guest.swap_total
    assert guest.balloon_cur >= floor - EPS
    before = guest.balloon_cur
    sim.step(1.0)
    # Free memory and cache are gone: only the swap-out pace is left.
    assert guest.cache == pytest.approx(0.0, abs=EPS)
    assert before - guest.balloon_cur <= 10 * MiB + EPS


# -- swap and cache ----------------------------------------------------------------------


def check_swap(sim: Simulation, before, dt: float) -> None:
    for uuid, g in sim.guests.items():
        _, _, swapped0, swap_out0 = before[uuid]
        room = g.balloon_cur - g.reserved - g.kernel - g.watermark
        if g.swapped > EPS:
            # Only when the balloon leaves less than the working set...
            assert g.working_set > room - EPS
            # ...and the page cache went first.
            assert g.cache == pytest.approx(0.0, abs=EPS)
        if g.swap_out_kib > swap_out0 + EPS:
            assert g.swapped > EPS
    host = sim.host
    if host.swap_usage > 0:
        assert host.used > host.total
    else:
        assert host.used <= host.total + EPS


def test_swapping_only_when_overcommitted_and_cache_goes_first():
    sim = Simulation(tight_scenario())
    swapped = []

    def check(sim, before, dt):
        check_swap(sim, before, dt)
        swapped.append(any(g.swapped > 0 for g in sim.guests.values()))

    # Steps of one model slice: swap activity within a step shows at its end.
    drive(sim, 1200, sim.scenario.max_substep, random.Random(3), check)
    assert any(swapped) and not all(swapped)


def test_a_roomy_host_never_swaps():
    sim = Simulation(tight_scenario(host_memory_mib=65536))
    for _ in range(300):
        sim.step(2.0)
        assert sim.host.swap_usage == 0
        assert all(g.swapped == 0 for g in sim.guests.values())
    assert sim.host.swap_in_pages == 0 and sim.host.swap_out_pages == 0
    assert sim.host.pressure_some == 0 and sim.host.pressure_full == 0


def test_page_cache_grows_into_free_memory_and_is_dropped_before_swapping():
    sim = Simulation(tight_scenario(host_memory_mib=65536))
    uuid = next(u for u, g in sim.guests.items() if g.name == "steady")
    guest = sim.guests[uuid]
    cache0 = guest.cache
    sim.step(20.0)
    assert guest.cache == pytest.approx(min(cache0 + 20 * guest.io_rate, guest.cache_max))
    sim.step(100.0)
    assert guest.cache == pytest.approx(guest.cache_max)
    # Squeeze slowly: the cache shrinks to nothing before anything is swapped.
    history = []
    while guest.balloon_cur > guest.reserved + guest.kernel + guest.working_set * 0.8:
        sim.set_balloon_target(uuid, int(guest.balloon_cur - 50 * MiB))
        sim.step(1.0)
        history.append((guest.cache, guest.swapped))
    first_swap = next(i for i, (_, swapped) in enumerate(history) if swapped > 0)
    assert first_swap > 0
    assert all(cache == pytest.approx(0.0, abs=EPS) for cache, _ in history[first_swap:])
    assert history[0][0] > 0
    assert guest.swap_out_kib > 0 and guest.major_faults > 0


def test_host_pressure_rises_with_swapping_and_falls_after():
    sim = Simulation(tight_scenario(host_memory_mib=5120, ksm_run=0))
    sim.step(300.0)
    assert sim.host.swap_usage > 0
    assert sim.host.pressure_some > 10 and sim.host.pressure_full > 0
    for uuid, guest in sim.guests.items():
        sim.set_balloon_target(uuid, int(guest.balloon_cur * 0.4))
    sim.step(60.0)
    high = sim.host.pressure_some
    # Give the host plenty of room: the swap goes and the average decays.
    sim.host.total *= 4
    sim.step(120.0)
    assert sim.host.swap_usage == 0
    assert sim.host.pressure_some < high / 2


# -- KSM -----------------------------------------------------------------------------------


def test_ksm_merges_only_while_running_and_unmerges_on_two():
    sim = Simulation(tight_scenario(host_memory_mib=65536, ksm_run=0))
    sim.step(60.0)
    assert sim.ksm.pages_sharing == 0 and sim.ksm.full_scans == 0
    assert sim.ksm.cpu_seconds == 0
    sim.ksm.set_run(1)
    sim.ksm.pages_to_scan = 1000
    sim.ksm.sleep_millisecs = 10
    sim.step(60.0)
    merged = sim.ksm.pages_sharing
    assert merged > 0 and sim.ksm.pages_shared > 0 and sim.ksm.full_scans >= 1
    assert sim.ksm.cpu_seconds > 0
    sim.ksm.set_run(0)
    sim.step(60.0)
    assert 0 < sim.ksm.pages_sharing <= merged          # kept, not growing
    cpu = sim.ksm.cpu_seconds
    sim.step(10.0)
    assert sim.ksm.cpu_seconds == cpu
    sim.ksm.set_run(2)
    assert sim.ksm.pages_shared == 0 and sim.ksm.pages_sharing == 0
    sim.step(60.0)
    assert sim.ksm.pages_sharing == 0


def test_ksm_merges_faster_with_more_pages_and_less_sleep():
    def merged_after(pages, sleep):
        sim = Simulation(tight_scenario(host_memory_mib=65536, ksm_run=1,
                                        ksm_pages_to_scan=pages, ksm_sleep_millisecs=sleep))
        sim.step(30.0)
        return sim.ksm.pages_sharing

    slow, faster, fastest = merged_after(100, 100), merged_after(100, 20), merged_after(1000, 20)
    assert 0 < slow < faster < fastest


def test_merge_across_nodes_only_changes_while_nothing_is_shared():
    sim = Simulation(tight_scenario(host_memory_mib=65536, ksm_run=1,
                                    ksm_pages_to_scan=1000, ksm_sleep_millisecs=10))
    sim.step(30.0)
    assert sim.ksm.pages_shared > 0
    assert not sim.ksm.set_merge_across_nodes(0)
    assert sim.ksm.merge_across_nodes == 1
    sim.ksm.set_run(2)
    assert sim.ksm.set_merge_across_nodes(0)
    assert sim.ksm.merge_across_nodes == 0


# -- determinism -------------------------------------------------------------------------------


def run_states(scenario: Scenario, steps=(0.5, 3.0, 10.0, 1.0)) -> list:
    sim = Simulation(scenario)
    rng = random.Random(99)   # the test's own targets, the same for both runs
    states = []
    for i in range(200):
        if i % 7 == 0:
            uuid = rng.choice(list(sim.guests))
            sim.set_balloon_target(uuid, int(sim.guests[uuid].max_kib * rng.uniform(0.3, 1)))
        sim.step(steps[i % len(steps)])
        states.append((sim.state(), sim.guest_samples()))
    return states


def test_same_seed_same_result():
    assert run_states(tight_scenario(seed=11)) == run_states(tight_scenario(seed=11))
    assert run_states(default_scenario()) == run_states(default_scenario())


def test_different_seeds_differ():
    assert run_states(tight_scenario(seed=11)) != run_states(tight_scenario(seed=12))


def test_workloads_depend_on_time_not_on_the_step_size():
    coarse, fine = Simulation(tight_scenario()), Simulation(tight_scenario())
    for _ in range(60):
        coarse.step(10.0)
        for _ in range(20):
            fine.step(0.5)
        assert [g.working_set for g in coarse.guests.values()] == \
            [g.working_set for g in fine.guests.values()]


def test_every_workload_kind_moves_as_described():
    guests = tuple(GuestSpec(kind, 4096, workload(kind, {"noise": 0.0}), shareable=0.1)
                   for kind in ("steady", "ramp", "spike", "diurnal"))
    guests += (GuestSpec("idle", 4096, workload("idle", {"noise": 0.0,
                                                          "bursts_per_hour": 12})),)
    sim = Simulation(Scenario(name="kinds", host_memory_mib=65536, guests=guests))
    by_name = {g.name: g for g in sim.guests.values()}
    seen: dict[str, list[float]] = {name: [] for name in by_name}
    for _ in range(360):
        sim.step(10.0)
        for name, g in by_name.items():
            seen[name].append(g.working_set / g.max_kib)
    assert set(round(s, 6) for s in seen["steady"]) == {0.4}
    assert seen["ramp"][0] < seen["ramp"][100] < seen["ramp"][179] == pytest.approx(0.7)
    assert seen["spike"][1] == pytest.approx(0.3) and seen["spike"][5] == pytest.approx(0.85)
    assert seen["spike"][40] == pytest.approx(0.3)
    assert min(seen["diurnal"]) == pytest.approx(0.2, abs=0.01)
    assert max(seen["diurnal"]) == pytest.approx(0.6, abs=0.01)
    idle = seen["idle"]
    assert idle.count(pytest.approx(0.08)) > len(idle) / 2
    assert max(idle) == pytest.approx(0.4)
