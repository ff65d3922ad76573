"""virtio-mem in the simulation: the shipped policies size virtio-mem guests by
their device, the others by their balloons, on one simulated host."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from momservice.hypervisor.base import HypervisorUnsupported
from momservice.policy import PolicySet
from momservice.policy_files import find_policy_files, read_policy_texts
from momservice.simulator.lab import Lab
from momservice.simulator.scenario import generated

SHIPPED = Path(__file__).resolve().parents[2] / "policies"
MiB = 1024


def _scenario():
    """The default generated host, its odd-numbered guests with half their
    memory on a virtio-mem device."""
    base = generated(guests=6, overcommit=1.9)
    guests = tuple(dataclasses.replace(g, virtio_mem_mib=g.memory_mib // 2) if i % 2 else g
                   for i, g in enumerate(base.guests))
    return dataclasses.replace(base, guests=guests)


def test_policies_resize_virtio_mem_guests_by_their_device(run):
    lab = Lab("sim:///", PolicySet(read_policy_texts(find_policy_files([SHIPPED]))),
              scenario=_scenario())
    sim = lab.simulation
    virtio = {u for u, g in sim.guests.items() if g.virtio_mem_kib}
    assert len(virtio) == 3

    async def go():
        await lab.start()
        await lab.run(15 * 60, step=5.0)
        await lab.stop()

    run(go())
    assert lab.record.errors == []
    requested = [(u, k) for e in lab.record.evaluations
                 for u, k in e.applied.get("VirtioMem", {}).items()]
    balloons = [u for e in lab.record.evaluations for u in e.applied_balloons]
    # The host ran short: devices were asked for less than their size, and
    # only the guests without one were ballooned.
    assert requested and {u for u, _ in requested} <= virtio
    assert any(k < sim.guests[u].virtio_mem_kib for u, k in requested)
    assert balloons and not set(balloons) & virtio
    for u in virtio:
        g = sim.guests[u]
        # Never below the boot memory.
        assert g.boot_kib <= g.balloon_cur <= g.max_kib
        latest = lab.engine.guests[u].latest
        assert latest["virtio_mem_current"] == int(g.balloon_cur - g.boot_kib)
    plain = next(u for u in sim.guests if u not in virtio)
    assert "virtio_mem_max" not in lab.engine.guests[plain].latest


def test_a_guest_without_a_device_has_no_virtio_mem(run):
    lab = Lab("sim:///", PolicySet({}), scenario=_scenario())
    plain, device = (next(u for u, g in lab.simulation.guests.items() if bool(g.virtio_mem_kib) == v)
                     for v in (False, True))

    async def go():
        await lab.start()
        with pytest.raises(HypervisorUnsupported):
            await lab.hypervisor.set_virtio_mem_requested(plain, 1024)
        await lab.hypervisor.set_virtio_mem_requested(device, 10 * 10 ** 9)
        await lab.stop()

    run(go())
    g = lab.simulation.guests[device]
    assert g.balloon_target == g.max_kib  # clamped to the device's size
