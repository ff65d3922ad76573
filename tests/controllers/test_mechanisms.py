"""Mechanisms as plug-ins: the registry, the interface, and one set of objects
shared by the engine, the requests by hand and the lab.

The engine here runs over libvirt's test driver (tests/helpers/libvirt_node.py)
and a temporary /proc and /sys tree: no real guest or kernel setting is touched.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from momservice import config, fields
from momservice.assembly import build_service
from momservice.collectors.ksm import KSM_TUNABLES
from momservice.collectors import HostCollector
from momservice.controllers import (BalloonController, Decision, KsmController, Mechanism,
                                    MechanismContext, build_mechanisms)
from momservice.controllers.registry import CONTROLS, MECHANISMS
from momservice.engine.core import Engine
from momservice.errors import InvalidArgument
from momservice.hypervisor.libvirt import LibvirtHypervisor
from momservice.policy import PolicySet
from momservice.simulator.lab import Lab
from tests.helpers.fake_host import FakeHost
from tests.helpers.libvirt_node import guest_specs, node_uri, write_node_xml
from tests.helpers.service_setup import NEVER, Setup

GiB = 1024 * 1024


def test_the_registry_is_the_configurations_list_of_controllers():
    assert tuple(MECHANISMS) == config.CONTROLLERS == ("Balloon", "KSM", "CpuTune", "IoTune",
                                                       "MemTune", "VirtioMem")
    for name, kind in MECHANISMS.items():
        assert issubclass(kind, Mechanism) and kind.name == name
        assert kind.entity in ("host", "guest") and kind.controls


def test_the_mechanisms_consume_exactly_the_known_controls():
    # The guest's are the catalogue's control rows, io_tune (its statistic's row:
    # the control is the list of its disks, set through them), MemTune's limits
    # and virtio_mem_requested (also statistics: the current values); the
    # host's the KSM tunables.
    memtune = {"mem_soft_limit", "mem_hard_limit", "mem_swap_hard_limit"}
    assert memtune <= fields.GUEST_OPTIONAL_FIELDS
    assert CONTROLS["guest"] == ({f.name for f in fields.GUEST_CONTROL_FIELDS}
                                 | {"io_tune", "virtio_mem_requested"} | memtune)
    assert CONTROLS["host"] == {f"ksm_{name}" for name in KSM_TUNABLES}


def test_the_default_balloon_floor_is_the_mechanisms(tmp_path: Path):
    assert config.Config.defaults().balloon_floor == config.DEFAULT_BALLOON_FLOOR \
        == BalloonController(None).floor_kib  # type: ignore[arg-type]
    ctx = MechanismContext(None, tmp_path)  # type: ignore[arg-type]
    assert BalloonController.build(ctx).floor_kib == config.DEFAULT_BALLOON_FLOOR
    ctx = MechanismContext(None, tmp_path, balloon_floor_kib=1024)  # type: ignore[arg-type]
    assert BalloonController.build(ctx).floor_kib == 1024


@pytest.mark.parametrize("mechanism, control, value, expected", [
    ("Balloon", "balloon_target", 2 * GiB + 0.7, 2 * GiB),
    ("KSM", "ksm_run", 1.0, 1),
    ("KSM", "ksm_pages_to_scan", 64.9, 64),
    ("CpuTune", "vcpu_quota", 45000.4, 45000),
    ("CpuTune", "vcpu_quota", -1, -1),
    ("CpuTune", "vcpu_period", 1000000, 1000000),
])
def test_check_gives_the_value_as_applied(tmp_path, mechanism, control, value, expected):
    built = build_mechanisms(MechanismContext(None, tmp_path), ())  # type: ignore[arg-type]
    assert built[mechanism].check(control, value) == expected


@pytest.mark.parametrize("mechanism, control, value", [
    ("Balloon", "balloon_target", -1),
    ("Balloon", "balloon_target", "2G"),
    ("Balloon", "ksm_run", 1),
    ("KSM", "ksm_run", 3),
    ("KSM", "ksm_sleep_millisecs", float("nan")),
    ("KSM", "balloon_target", 1),
    ("CpuTune", "vcpu_quota", 999),
    ("CpuTune", "vcpu_quota", 0),
    ("CpuTune", "vcpu_quota", 17592186044416),
    ("CpuTune", "vcpu_period", 1000001),
    ("CpuTune", "vcpu_period", True),
    ("CpuTune", "balloon_target", 1),
    ("MemTune", "mem_hard_limit", -1),
    ("MemTune", "mem_soft_limit", "1G"),
    ("MemTune", "mem_hard_limit", 2 ** 60),
    ("MemTune", "balloon_target", 1),
])
def test_check_refuses_what_cannot_be_applied(tmp_path, mechanism, control, value):
    built = build_mechanisms(MechanismContext(None, tmp_path), ())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        built[mechanism].check(control, value)


def test_every_mechanism_is_built_once_and_the_configured_ones_are_enabled(tmp_path):
    built = build_mechanisms(MechanismContext(None, tmp_path), ["KSM", "NoSuch"])  # type: ignore[arg-type]
    assert sorted(built) == ["Balloon", "CpuTune", "IoTune", "KSM", "MemTune", "VirtioMem"]
    assert built.enabled == (built["KSM"],)
    assert isinstance(built["KSM"], KsmController) and built["KSM"].ksm_dir == tmp_path


def test_engine_requests_and_service_share_one_object_per_mechanism(tmp_path):
    setup = Setup(tmp_path)
    service = setup.service()
    assert service.engine.mechanisms == (service.mechanisms["Balloon"],
                                         service.mechanisms["KSM"])
    only_ksm = setup.service(controllers=("KSM",))
    assert only_ksm.engine.mechanisms == (only_ksm.mechanisms["KSM"],)
    assert isinstance(only_ksm.mechanisms["Balloon"], BalloonController)  # for requests


def test_the_lab_runs_the_registered_mechanisms(tmp_path):
    lab = Lab("sim:///?guests=2&host_mib=4096", PolicySet({}))
    try:
        assert [m.name for m in lab.engine.mechanisms] == list(MECHANISMS)
        assert lab.engine.mechanisms == tuple(lab.mechanisms.values())
        assert lab.mechanisms["KSM"].ksm_dir == lab.ksm_dir
    finally:
        asyncio.run(lab.stop())


class Recorded(Mechanism):
    """A mechanism the engine never heard of: what a new module would add."""

    name = "Recorded"
    entity = "host"
    controls = frozenset({"recorded_level"})

    def __init__(self) -> None:
        self.dry_run = False
        self.decisions: list[Decision] = []

    @classmethod
    def build(cls, context: MechanismContext) -> "Recorded":
        return cls()

    def check(self, control: str, value: Any) -> int:
        return int(value)

    async def act(self, decision: Decision) -> dict[str, Any]:
        self.decisions.append(decision)
        return {c: self.check(c, v) for c, v in decision.host_controls.items()
                if c in self.controls}


def test_a_new_mechanism_needs_nothing_of_the_engine(tmp_path, caplog):
    node = write_node_xml(tmp_path / "node.xml", guest_specs(1))
    host = FakeHost(tmp_path / "host")
    host.set_memory(8 * GiB, 4 * GiB)
    recorded = Recorded()
    policies = PolicySet({"10-level": "(Host.Control \"recorded_level\" 3)\n"})

    async def body():
        engine = Engine(LibvirtHypervisor(node_uri(node)), HostCollector(host.proc, host.sys),
                        policies, [recorded], host_interval=NEVER, guest_interval=NEVER,
                        manager_interval=NEVER, policy_interval=NEVER)
        await engine.start()
        try:
            return engine.last_evaluation
        finally:
            await engine.stop()

    evaluation = asyncio.run(body())
    assert evaluation.applied == {"Recorded": {"recorded_level": 3}}
    assert recorded.decisions[0].host_controls == {"recorded_level": 3}
    assert "no controller handles" not in caplog.text


def test_a_control_no_mechanism_consumes_is_named_once(tmp_path, caplog):
    setup = Setup(tmp_path)
    service = setup.service()
    service.set_policy("90-typo", "(Host.Control \"ksm_runn\" 1)\n")

    async def body():
        await service.start()
        try:
            await service.evaluate_now(dry_run=True)
            await service.evaluate_now(dry_run=True)
        finally:
            await service.stop()

    asyncio.run(body())
    assert caplog.text.count("'ksm_runn', which no controller handles") == 1


def test_build_service_honours_controllers_and_dry_run(tmp_path):
    setup = Setup(tmp_path)
    config_ = dataclasses.replace(setup.config, controllers=("Balloon",), dry_run=True)
    service = build_service(config_, proc_root=setup.host.proc, sys_root=setup.host.sys,
                            pressure_path=None)
    assert [m.name for m in service.engine.mechanisms] == ["Balloon"]
    assert all(m.dry_run for m in service.mechanisms.values())
    assert service.mechanisms["KSM"].ksm_dir == setup.ksm_dir
