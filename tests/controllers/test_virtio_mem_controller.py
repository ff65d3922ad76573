"""The VirtioMem mechanism: rounding, range, refusals, changed values only, dry run.

The hypervisor here records the requests: libvirt's test driver has no
device update (virDomainUpdateDeviceFlags), so no real one can take them
in a unit test; the libvirt path runs on QEMU guests in
tests/e2e/test_virtio_mem.py.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from momservice.controllers.base import Decision, MechanismContext
from momservice.controllers.registry import CONTROLS, MECHANISMS
from momservice.controllers.virtio_mem import VirtioMemController
from momservice.errors import InvalidArgument
from momservice.hypervisor.base import (GuestInfo, HypervisorError, HypervisorInterface,
                                        HypervisorUnsupported)

A = "aaaaaaaa-0000-0000-0000-000000000001"
B = "bbbbbbbb-0000-0000-0000-000000000002"
NAMES = {A: "web1", B: "db1"}
MIB = 1024
DEVICE = {"virtio_mem_max": 512 * MIB, "virtio_mem_block": 2 * MIB,
          "virtio_mem_requested": 128 * MIB, "virtio_mem_current": 128 * MIB}


class RecordingHypervisor(HypervisorInterface):
    """Records set_virtio_mem_requested; ``unsupported`` / ``refuse`` guests raise."""

    uri = "recording:///"

    def __init__(self, *, unsupported: set[str] = frozenset(),
                 refuse: set[str] = frozenset()) -> None:
        self.calls: list[tuple[str, int]] = []
        self.unsupported, self.refuse = set(unsupported), set(refuse)

    @property
    def connected(self) -> bool:
        return True

    async def start(self, listener: Any) -> None: ...

    async def close(self) -> None: ...

    def guests(self) -> dict[str, GuestInfo]:
        return {}

    async def resync(self) -> None: ...

    async def collect(self) -> dict[str, dict[str, Any]]:
        return {}

    async def set_balloon_target(self, uuid: str, kib: int) -> None:
        raise AssertionError("VirtioMem must not touch the balloon")

    async def set_virtio_mem_requested(self, uuid: str, kib: int) -> None:
        if uuid in self.unsupported:
            raise HypervisorUnsupported("the guest has no virtio-mem device")
        if uuid in self.refuse:
            raise HypervisorError("libvirt said no")
        self.calls.append((uuid, kib))


def decide(controls: dict[str, Any], samples: dict[str, dict[str, Any]]) -> Decision:
    return Decision(guest_controls={u: {"virtio_mem_requested": v} for u, v in controls.items()},
                    guest_samples=samples, guest_names=NAMES)


def test_registered_and_built_from_the_context(tmp_path):
    assert MECHANISMS["VirtioMem"] is VirtioMemController
    assert "virtio_mem_requested" in CONTROLS["guest"]
    hv = RecordingHypervisor()
    built = VirtioMemController.build(MechanismContext(hv, tmp_path, dry_run=True))
    assert built.hypervisor is hv and built.dry_run


def test_requests_are_rounded_to_the_block_and_sent_when_changed(run):
    hv = RecordingHypervisor()
    vm = VirtioMemController(hv)
    applied = run(vm.act(decide({A: 300 * MIB + 1025, B: 128 * MIB},
                                {A: dict(DEVICE), B: dict(DEVICE)})))
    # 301 MiB + 1 KiB is nearer 302 MiB than 300 MiB; B asks for what it has.
    assert applied == {A: 302 * MIB} and hv.calls == [(A, 302 * MIB)]
    # Asked again before the definition shows it: not sent twice.
    assert run(vm.act(decide({A: 302 * MIB}, {A: dict(DEVICE)}))) == {}
    # The definition caught up: nothing to send either.
    assert run(vm.act(decide({A: 302 * MIB}, {A: DEVICE | {"virtio_mem_requested": 302 * MIB}}))) == {}
    # Someone else changed it meanwhile: ours goes out again.
    assert run(vm.act(decide({A: 302 * MIB}, {A: DEVICE | {"virtio_mem_requested": 64 * MIB}}))) \
        == {A: 302 * MIB}
    # Down to nothing and up to the whole device are both in range.
    assert run(vm.act(decide({A: 0.4, B: 512 * MIB}, {A: dict(DEVICE), B: dict(DEVICE)}))) == \
        {A: 0, B: 512 * MIB}
    assert vm.operations == len(hv.calls) == 4


def test_out_of_range_and_absent_devices_are_refused_once_with_the_reason(run, caplog):
    hv = RecordingHypervisor(unsupported={B})
    vm = VirtioMemController(hv)
    caplog.set_level(logging.WARNING, "momservice.controllers.virtio_mem")
    balloon_only = {"balloon_max": 1048576}
    for _ in range(3):
        assert run(vm.act(decide({A: 513 * MIB, B: 64 * MIB}, {A: dict(DEVICE), B: dict(DEVICE)}))) == {}
    for _ in range(3):
        assert run(vm.act(decide({A: -1, B: 64 * MIB}, {A: balloon_only, B: dict(DEVICE)}))) == {}
    messages = [r.getMessage() for r in caplog.records]
    assert hv.calls == []
    assert len(messages) == 3, messages
    assert "web1" in messages[0] and "above the device's size, 524288 KiB" in messages[0]
    assert "db1" in messages[1] and "no virtio-mem device" in messages[1]
    assert "web1" in messages[2] and "non-negative" in messages[2]
    # Another reason for the same guest is news again; so is the first once applied.
    assert run(vm.act(decide({A: 64 * MIB}, {A: balloon_only}))) == {}
    assert "no virtio-mem device" in caplog.records[-1].getMessage()
    assert run(vm.act(decide({A: 64 * MIB}, {A: dict(DEVICE)}))) == {A: 64 * MIB}
    count = len(caplog.records)
    assert run(vm.act(decide({A: 64 * MIB}, {A: balloon_only}))) == {}
    assert len(caplog.records) == count + 1


def test_one_refusal_does_not_stop_the_others(run, caplog):
    hv = RecordingHypervisor(refuse={A})
    vm = VirtioMemController(hv)
    assert run(vm.act(decide({A: 64 * MIB, B: 64 * MIB}, {A: dict(DEVICE), B: dict(DEVICE)}))) \
        == {B: 64 * MIB}
    assert "libvirt said no" in caplog.text


def test_dry_run_sends_nothing(run, caplog):
    hv = RecordingHypervisor()
    caplog.set_level(logging.INFO, "momservice.controllers.virtio_mem")
    vm = VirtioMemController(hv, dry_run=True)
    assert run(vm.act(decide({A: 64 * MIB}, {A: dict(DEVICE)}))) == {A: 64 * MIB}
    assert hv.calls == [] and "would ask virtio-mem of guest web1" in caplog.text


def test_manual_requests_are_checked_and_rounded(run):
    hv = RecordingHypervisor()
    vm = VirtioMemController(hv)
    assert run(vm.set_requested(A, 129 * MIB, DEVICE, "web1")) == 130 * MIB
    # The same request again is sent: the administrator asked.
    assert run(vm.set_requested(A, 130 * MIB, DEVICE, "web1")) == 130 * MIB
    assert hv.calls == [(A, 130 * MIB), (A, 130 * MIB)]
    with pytest.raises(InvalidArgument, match="above the device's size"):
        run(vm.set_requested(A, 600 * MIB, DEVICE, "web1"))
    with pytest.raises(InvalidArgument, match="no virtio-mem device"):
        run(vm.set_requested(A, 64 * MIB, {"balloon_max": 1}, "web1"))
    assert vm.check("virtio_mem_requested", 5.5) == 5
    with pytest.raises(InvalidArgument):
        vm.check("virtio_mem_requested", "lots")
    with pytest.raises(InvalidArgument):
        vm.check("balloon_target", 5)
