"""MemTune in the simulator: cgroup limits squeeze a guest's QEMU (clean pages
dropped, the rest to host swap), balloons that do not answer, and the example
policy (policies/examples/memtune-reclaim.policy) in the lab."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from momservice.hypervisor.base import HypervisorError
from momservice.policy import PolicySet
from momservice.policy_files import find_policy_files, read_policy_texts
from momservice.simulator.guest_model import QEMU_FILE_KIB, MiB
from momservice.simulator.hypervisor import SimHypervisor
from momservice.simulator.lab import Lab
from momservice.simulator.metrics import LabMetrics
from momservice.simulator.scenario import GuestSpec, Scenario, load_scenario, workload
from momservice.simulator.simulation import Simulation
from momservice.simulator.driver import SimulationDriver

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "benchmarks" / "scenarios" / "memtune" / "stuck-balloons.toml"
EXAMPLE = REPO / "policies" / "examples" / "memtune-reclaim.policy"


def _one_guest(**spec) -> Simulation:
    """One 4 GiB guest that bursts to 80 % for its first minute; no file reads
    (its page cache does not grow), so that only the limits move its memory."""
    spec.setdefault("io_mib_s", 0.0)
    guest = GuestSpec("g", 4096, workload("spike", {"level": 0.2, "peak": 0.8, "at": 0,
                                                    "length": 60, "noise": 0.0}), **spec)
    return Simulation(Scenario(name="one", host_memory_mib=16384, guests=(guest,),
                               host_swap_mib=8192))


def test_a_hard_limit_drops_clean_pages_first_then_swaps_to_the_limit():
    sim = _one_guest()
    sim.step(30)
    (uuid, guest), = sim.guests.items()
    held = guest.resident_ram
    pages_before = sim.host.swap_out_pages
    limit = held - 200 * MiB
    sim.set_mem_tune(uuid, {"mem_hard_limit": int(limit)})
    sim.step(1)
    assert guest.resident_ram == pytest.approx(limit, abs=1)
    assert guest.clean_dropped == pytest.approx(QEMU_FILE_KIB)
    assert guest.limit_swapped == pytest.approx(200 * MiB - QEMU_FILE_KIB, abs=1)
    # Counted as host swap, and in the host's swap pages.
    assert sim.host.swap_usage == pytest.approx(guest.limit_swapped, abs=1)
    assert sim.host.swap_out_pages - pages_before == pytest.approx(
        guest.limit_swapped / 4, rel=0.01)
    sample = sim.guest_samples()[uuid]
    assert sample["mem_hard_limit"] == int(limit) and "mem_soft_limit" not in sample
    assert sample["rss"] == pytest.approx(limit, abs=2)


def test_a_squeezed_idle_guest_keeps_its_cold_pages_in_swap_after_the_limit_goes():
    sim = _one_guest()
    sim.step(120)                     # the burst is over: most touched pages are cold
    (uuid, guest), = sim.guests.items()
    cold = guest.touched - guest.in_use
    assert cold > 1000 * MiB
    sim.set_mem_tune(uuid, {"mem_soft_limit": int(guest.resident_ram - cold / 2)})
    sim.step(1)
    swapped = guest.limit_swapped
    assert swapped > 0
    sim.set_mem_tune(uuid, {"mem_soft_limit": 0})
    faults = guest.host_major_faults
    sim.step(300)
    # Nothing it uses was swapped: nothing comes back, nothing faults.
    assert guest.limit_swapped == pytest.approx(swapped)
    assert guest.host_major_faults == faults
    # Squeezed into its working set, it faults back what it uses.
    sim.set_mem_tune(uuid, {"mem_hard_limit": int(guest.in_use * 0.8)})
    sim.step(10)
    assert guest.host_major_faults > faults
    assert guest.resident_ram == pytest.approx(guest.in_use * 0.8, rel=0.01)


def test_a_limit_without_host_swap_left_stays_exceeded_and_counts_as_oom():
    sim = _one_guest()
    sim = Simulation(replace(sim.scenario, host_swap_mib=0))
    sim.step(30)
    (uuid, guest), = sim.guests.items()
    sim.set_mem_tune(uuid, {"mem_hard_limit": int(guest.resident_ram / 2)})
    sim.step(1)
    assert guest.limit_swapped == 0 and guest.limit_oom_kib > 0


def test_a_balloon_that_does_not_answer_reports_once_and_ignores_targets():
    sim = _one_guest(balloon_responds=False)
    (uuid, guest), = sim.guests.items()
    first = sim.guest_samples()[uuid]
    sim.set_balloon_target(uuid, guest.max_kib // 2)
    sim.step(100)
    later = sim.guest_samples()[uuid]
    assert later["balloon_cur"] == guest.max_kib
    assert later["stats_age"] == pytest.approx(100)
    assert later["mem_unused"] == first["mem_unused"]


def test_the_hypervisor_sets_limits_and_refuses_bad_ones(run):
    sim_hv = SimHypervisor(SimulationDriver(_one_guest().scenario))

    async def go():
        await sim_hv.start(_Listener())
        (uuid,) = sim_hv.guests()
        await sim_hv.set_mem_tune(uuid, {"mem_hard_limit": 2048 * MiB,
                                         "mem_swap_hard_limit": 3072 * MiB})
        sample = (await sim_hv.collect())[uuid]
        assert (sample["mem_hard_limit"], sample["mem_swap_hard_limit"]) == (
            2048 * MiB, 3072 * MiB)
        with pytest.raises(HypervisorError):
            await sim_hv.set_mem_tune(uuid, {"hard_limit": 1})
        with pytest.raises(HypervisorError):
            await sim_hv.set_mem_tune("nobody", {"mem_hard_limit": 1})
        await sim_hv.close()

    run(go())


class _Listener:
    def guest_added(self, info) -> None: ...
    def guest_removed(self, uuid) -> None: ...
    def connection_changed(self, connected) -> None: ...


def _policies(*extra: Path) -> PolicySet:
    """The shipped defaults, and ``extra`` policy files beside them."""
    texts = read_policy_texts(find_policy_files([REPO / "policies"]))
    texts.update({path.stem: path.read_text() for path in extra})
    return PolicySet(texts)


def _lab_run(run, policies: PolicySet, seconds: float) -> tuple[Lab, LabMetrics]:
    scenario = load_scenario(SCENARIO)
    lab = Lab("sim:///", policies, scenario=scenario)
    metrics = LabMetrics()

    async def go():
        await lab.start()
        await lab.run(seconds, step=10.0, observe=metrics.observe)
        await lab.stop()

    run(go(), timeout=300)
    return lab, metrics


def test_the_example_policy_squeezes_only_the_stuck_guests_and_eases_the_host(run):
    seconds = load_scenario(SCENARIO).duration
    plain, plain_metrics = _lab_run(run, _policies(), seconds)
    lab, metrics = _lab_run(run, _policies(EXAMPLE), seconds)
    assert not lab.record.errors, lab.record.errors
    stuck = {g.name: g for g in lab.simulation.guests.values() if not g.responds}
    others = [g for g in lab.simulation.guests.values() if g.responds]
    assert sorted(stuck) == ["stuck-1", "stuck-2"]
    limited = {lab.simulation.guests[u].name for e in lab.record.evaluations
               for u, c in e.guest_controls.items() if c.get("mem_hard_limit")}
    assert limited == set(stuck)
    for guest in stuck.values():
        assert guest.limit_swapped > 1024 * MiB
        assert guest.resident_ram <= guest.limit + 1
    assert all(g.limit == 0 and g.limit_swapped == 0 for g in others)
    # What the stuck guests gave up, the host did not have to find elsewhere:
    # less swapping, by the host and by the guests the balloons squeezed.
    assert plain_metrics.pressure_seconds > 0
    assert metrics.pressure_seconds < plain_metrics.pressure_seconds
    assert metrics.host_swap_pages < plain_metrics.host_swap_pages
    assert metrics.guest_swap_pages < plain_metrics.guest_swap_pages
