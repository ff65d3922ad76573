"""The IoTune mechanism: what it sends, what it refuses, and vdsm-style policies
driving it.

A recording hypervisor stands in for libvirt here, because libvirt's test
driver refuses every limit above 0 unless a burst maximum is set with it
(its own check; QEMU's driver has none), so it could not take a real
limit; the call itself reaches the test driver in
tests/hypervisor/test_libvirt_iotune.py, and QEMU in tests/e2e/test_iotune.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from momservice.controllers import Decision, MechanismContext, build_mechanisms
from momservice.controllers.iotune import MAX_LIMIT, IoTuneController
from momservice.errors import InvalidArgument, NotFound
from momservice.fields import GUEST_REQUIRED_FIELDS
from momservice.hypervisor.base import (GuestInfo, HypervisorError, HypervisorInterface,
                                        HypervisorUnsupported)
from momservice.policy import Entity, PolicySet
from momservice.policy.iotune_value import DiskIoTune, IoLimits, IoTuneDevice
from momservice.policy_files import find_policy_files, read_policy_texts

VDSM_STYLE = Path(__file__).resolve().parents[2] / "benchmarks" / "policies" / "vdsm-style"
A, B = "aaaaaaaa-0000-0000-0000-000000000001", "bbbbbbbb-0000-0000-0000-000000000002"
MAXIMUM = {"total_bytes_sec": 10485760, "total_iops_sec": 200}


class RecordingHypervisor(HypervisorInterface):
    """Records set_io_tune; ``refuse`` maps a disk to the error it raises."""

    uri = "recording:///"

    def __init__(self, refuse: dict[str, Exception] | None = None) -> None:
        self.calls: list[tuple[str, str, dict[str, int]]] = []
        self.refuse = refuse or {}

    connected = True

    async def start(self, listener: Any) -> None: ...

    async def close(self) -> None: ...

    def guests(self) -> dict[str, GuestInfo]:
        return {}

    async def resync(self) -> None: ...

    async def collect(self) -> dict[str, dict[str, Any]]:
        return {}

    async def set_balloon_target(self, uuid: str, kib: int) -> None: ...

    async def set_io_tune(self, uuid: str, device: str, limits: dict[str, int]) -> None:
        if device in self.refuse:
            raise self.refuse[device]
        self.calls.append((uuid, device, dict(limits)))


def sample(**current: dict[str, int]) -> dict[str, Any]:
    """A guest sample with disks ``name=current limits``, each with MAXIMUM as its maximum."""
    disks = {name: IoLimits(values) for name, values in current.items()}
    return {**{f: 1 for f in GUEST_REQUIRED_FIELDS},
            "io_tune": [IoTuneDevice(n, f"/images/{n}.raw", IoLimits(), IoLimits(MAXIMUM), c)
                        for n, c in disks.items()],
            "io_tune_current": [DiskIoTune(n, f"/images/{n}.raw", c) for n, c in disks.items()]}


def decide(requests: dict[str, list], samples: dict[str, dict]) -> Decision:
    return Decision(guest_controls={u: {"io_tune": r} for u, r in requests.items()},
                    guest_samples=samples, guest_names={A: "web", B: "db"})


def test_only_the_limits_that_differ_are_sent(run):
    hv = RecordingHypervisor()
    mechanism = IoTuneController(hv)
    samples = {A: sample(vda={"total_iops_sec": 200}, vdb={}), B: sample(vda=MAXIMUM)}
    applied = run(mechanism.act(decide({
        A: [{"name": "vda", "path": "", **MAXIMUM, "read_bytes_sec": None},
            {"name": "vdb", "path": "", "write_iops_sec": 0}],
        B: [{"name": "vda", **MAXIMUM}]}, samples)))
    assert hv.calls == [(A, "vda", {"total_bytes_sec": 10485760})]
    assert applied == {A: [{"name": "vda", "total_bytes_sec": 10485760}]}
    # Asked again before the sample shows it (libvirt's event not in yet): not sent twice.
    assert run(mechanism.act(decide({A: [{"name": "vda", **MAXIMUM}]}, samples))) == {}
    # The disk changed meanwhile (by hand, say): sent again.
    changed = {A: sample(vda={"total_bytes_sec": 5, "total_iops_sec": 200})}
    run(mechanism.act(decide({A: [{"name": "vda", **MAXIMUM}]}, changed)))
    assert hv.calls[-1] == (A, "vda", {"total_bytes_sec": 10485760})


def test_refusals_are_logged_once_per_guest_disk_and_reason(run, caplog):
    hv = RecordingHypervisor({"vdb": HypervisorError("total and read/write of bytes_sec "
                                                      "cannot be set at the same time"),
                              "vdc": HypervisorUnsupported("no block I/O tuning")})
    mechanism = IoTuneController(hv)
    samples = {A: sample(vda={}, vdb={}, vdc={})}
    requests = {A: [{"name": "vda", "total_iops_sec": -1},
                    {"name": "vda", "total_iops_sec": MAX_LIMIT + 1},
                    {"name": "vdb", "total_bytes_sec": 5, "read_bytes_sec": 5},
                    {"name": "vdc", "total_bytes_sec": 5},
                    {"name": "vdz", "total_bytes_sec": 5}]}
    with caplog.at_level(logging.WARNING, logger="momservice.controllers.iotune"):
        for _ in range(3):
            assert run(mechanism.act(decide(requests, samples))) == {}
    messages = [r.getMessage() for r in caplog.records]
    # vda's two bad values have one reason: said once.
    assert len(messages) == 4, messages
    assert sum("must be a whole number from 0" in m for m in messages) == 1
    assert any("io_tune vdb" in m and "cannot be set at the same time" in m for m in messages)
    assert any("io_tune vdc" in m and "no block I/O tuning" in m for m in messages)
    assert any("io_tune vdz" in m and "no such disk" in m for m in messages)
    assert all("web (" + A in m for m in messages)
    assert hv.calls == []


def test_a_dry_run_sends_nothing(run, caplog):
    hv = RecordingHypervisor()
    mechanism = IoTuneController(hv, dry_run=True)
    with caplog.at_level(logging.INFO, logger="momservice.controllers.iotune"):
        applied = run(mechanism.act(decide({A: [{"name": "vda", **MAXIMUM}]},
                                           {A: sample(vda={})})))
    assert hv.calls == [] and applied == {A: [{"name": "vda", **MAXIMUM}]}
    assert any("Dry run: would set I/O limits" in r.getMessage() for r in caplog.records)


def test_limits_by_hand_are_checked_and_sent_as_given(run):
    hv = RecordingHypervisor()
    mechanism = IoTuneController(hv)
    current = sample(vda=MAXIMUM)
    assert run(mechanism.set_limits(A, "vda", {"total_iops_sec": 200.0, "read_bytes_sec": None},
                                    current, "web")) == {"total_iops_sec": 200}
    assert run(mechanism.set_limits(A, "/images/vda.raw", {"write_iops_sec": 3}, current)) \
        == {"write_iops_sec": 3}
    assert hv.calls == [(A, "vda", {"total_iops_sec": 200}),
                        (A, "/images/vda.raw", {"write_iops_sec": 3})]
    for bad in ({"speed": 1}, {"read_iops_sec": -1}, {"read_iops_sec": True}, {}):
        with pytest.raises(InvalidArgument):
            run(mechanism.set_limits(A, "vda", bad, current))
    with pytest.raises(NotFound, match="has no disk 'vdz'"):
        run(mechanism.set_limits(A, "vdz", {"read_iops_sec": 1}, current))
    # Disks not collected: the request goes to libvirt, which knows.
    run(mechanism.set_limits(A, "vdz", {"read_iops_sec": 1}, {}))
    assert hv.calls[-1] == (A, "vdz", {"read_iops_sec": 1})


def test_check_gives_the_control_as_applied(tmp_path):
    mechanism = build_mechanisms(MechanismContext(None, tmp_path), ())["IoTune"]  # type: ignore[arg-type]
    assert mechanism.check("io_tune", [{"name": "vda", "path": "/x", "total_iops_sec": 2.5}]) \
        == [{"name": "vda", "total_iops_sec": 2}]
    for bad in (5, [{"total_iops_sec": 1}], [{"name": "vda", "total_iops_sec": -1}]):
        with pytest.raises(InvalidArgument):
            mechanism.check("io_tune", bad)
    with pytest.raises(InvalidArgument):
        mechanism.check("balloon_target", 5)


def _vdsm_style() -> PolicySet:
    return PolicySet(read_policy_texts(find_policy_files([VDSM_STYLE])))


def _entities() -> tuple[Entity, list[Entity]]:
    host = Entity.host()
    host.add_sample({"mem_available": 16 << 20, "mem_free": 12 << 20, "mem_unused": 8 << 20,
                     "swap_total": 0, "swap_usage": 0, "cpu_count": 4, "ksm_run": 0,
                     "ksm_pages_to_scan": 100, "ksm_sleep_millisecs": 20,
                     "ksm_merge_across_nodes": 1, "ksm_shareable": 0, "anon_pages": 1 << 20})
    guests = []
    for uuid, name, disks in ((A, "web", {"vda": {}, "vdb": {"read_iops_sec": 9}}),
                              (B, "db", None)):
        entity = Entity.guest({"name": name, "uuid": uuid})
        values = sample(**disks) if disks else {f: 1 for f in GUEST_REQUIRED_FIELDS}
        values.update(balloon_cur=1 << 20, balloon_max=1 << 20, balloon_min=0,
                      mem_available=1 << 20, mem_unused=512 << 10)
        entity.add_sample(values)
        guests.append(entity)
    return host, guests


def test_vdsm_style_policies_run_unchanged_and_their_limits_are_applied(run):
    host, guests = _entities()
    policies = _vdsm_style()
    assert "05-iotune" in policies.names
    hv = RecordingHypervisor()
    mechanism = IoTuneController(hv)

    def evaluate_and_apply(params: dict) -> dict:
        result = policies.evaluate(host, guests, params)
        assert result.ok and not result.guest_errors, (result.error, result.guest_errors)
        controls = {g.props["uuid"]: c for g, c in result.guest_controls.items()}
        assert "io_tune" not in controls.get(B, {})       # no disks with limits: left alone
        return run(mechanism.act(Decision(guest_controls=controls,
                                          guest_samples={g.props["uuid"]: g.latest
                                                         for g in guests})))

    # ioTuneEnabled off (the default): every limit lifted; vdb had one.
    assert evaluate_and_apply({}) == {A: [{"name": "vdb", "read_iops_sec": 0}]}
    # On: each disk held at its maximum.
    hv.calls.clear()
    evaluate_and_apply({"ioTuneEnabled": 1})
    assert hv.calls == [(A, "vda", MAXIMUM), (A, "vdb", {**MAXIMUM, "read_iops_sec": 0})]
