"""ControlsApplied carries what every mechanism applied, under the policies' names."""

from __future__ import annotations

from types import SimpleNamespace

from momservice.bus.interfaces import applied_controls
from momservice.cli.bus_client import unwrap
from momservice.controllers.registry import MECHANISMS


def test_each_mechanisms_changes_reach_the_signal():
    evaluation = SimpleNamespace(
        applied_ksm={"run": 1}, applied_balloons={"u-1": 524288},
        applied={"Balloon": {"u-1": 524288}, "KSM": {"run": 1},
                 "IoTune": {"u-2": [{"name": "vda", "read_iops_sec": 3}]},
                 "VirtioMem": {"u-3": 262144},
                 "CpuTune": {"u-1": {"vcpu_quota": 25000}},
                 "MemTune": {"u-2": {"mem_hard_limit": 786432, "mem_soft_limit": 0}}})
    # A mechanism registered later must be added here (and to applied_controls).
    assert set(evaluation.applied) == set(MECHANISMS)
    signal = {path: unwrap(controls) for path, controls in applied_controls(evaluation).items()}
    assert signal == {
        "/org/ovirt/mom1/host": {"ksm_run": 1},
        "/org/ovirt/mom1/guest/u_1": {"balloon_target": 524288, "vcpu_quota": 25000},
        "/org/ovirt/mom1/guest/u_2": {"io_tune": [{"name": "vda", "read_iops_sec": 3}],
                                      "mem_hard_limit": 786432, "mem_soft_limit": 0},
        "/org/ovirt/mom1/guest/u_3": {"virtio_mem_requested": 262144},
    }
