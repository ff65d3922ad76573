"""The engine end to end on libvirt's test driver and a fake host tree.

The hypervisor is real libvirt (its test driver); the host statistics come
from a temporary /proc tree so the test decides how much memory is free;
the KSM controller writes a temporary directory laid out like
/sys/kernel/mm/ksm (the real sysfs is exercised in tests/controllers).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from momservice.collectors import HostCollector
from momservice.controllers import BalloonController, KsmController
from momservice.engine.core import Engine, EngineObserver
from momservice.hypervisor.libvirt import LibvirtHypervisor
from momservice.policy import PolicySet
from momservice.policy_files import find_policy_files, read_policy_texts
from tests.helpers.fake_host import FakeHost
from tests.helpers.hypervisor_listener import wait_for
from tests.helpers.libvirt_node import (GuestSpec, domain_xml, guest_specs,
                                        node_uri, write_node_xml)

# MoM's shipped set: its bounded step (5 % per evaluation) and its floors are
# simple enough to check the engine's applied targets against by hand.
SHIPPED = Path(__file__).resolve().parents[2] / "policies" / "mom"
GiB = 1024 * 1024


def shipped_policies() -> PolicySet:
    return PolicySet(read_policy_texts(find_policy_files([SHIPPED])))


class Recorder(EngineObserver):
    def __init__(self) -> None:
        self.evaluations = []
        self.added: list[str] = []
        self.removed: list[str] = []

    def evaluated(self, evaluation) -> None:
        self.evaluations.append(evaluation)

    def guest_added(self, uuid: str) -> None:
        self.added.append(uuid)

    def guest_removed(self, uuid: str) -> None:
        self.removed.append(uuid)


@pytest.fixture
def fake_host(tmp_path: Path) -> FakeHost:
    host = FakeHost(tmp_path / "host")
    host.set_memory(64 * GiB, 32 * GiB)
    return host


@pytest.fixture
def specs() -> list[GuestSpec]:
    # No min_guarantee: the floors below come from the policy and the clamp.
    return guest_specs(6, min_guarantee_every=0)


def make_engine(node: Path, fake_host: FakeHost, policies: PolicySet, *,
                floor: int = 262144, dry_run: bool = False) -> tuple[Engine, Recorder]:
    hv = LibvirtHypervisor(node_uri(node))
    mechanisms = [BalloonController(hv, floor_kib=floor, dry_run=dry_run),
                  KsmController(fake_host.sys / "kernel/mm/ksm", dry_run=dry_run)]
    engine = Engine(hv, HostCollector(fake_host.proc, fake_host.sys), policies, mechanisms,
                    host_interval=0.2, guest_interval=0.2, manager_interval=0.5,
                    policy_interval=0.3, history_length=1, dry_run=dry_run)
    recorder = Recorder()
    engine.observers.append(recorder)
    return engine, recorder


def test_pressure_shrinks_guests_by_at_most_five_percent(run, tmp_path, fake_host, specs):
    node = write_node_xml(tmp_path / "node.xml", specs)
    fake_host.set_memory(64 * GiB, int(64 * GiB * 0.10))  # free fraction 0.10: pressure

    async def body() -> None:
        engine, _ = make_engine(node, fake_host, shipped_policies())
        await engine.start()
        try:
            before = {u: g.latest["balloon_cur"] for u, g in engine.guests.items()}
            assert len(before) == len(specs)
            evaluation = await engine.evaluate()
            assert evaluation.result.error is None
            assert evaluation.applied_balloons, "pressure must shrink someone"
            await engine.collect_guests()
            for uuid, old in before.items():
                new = engine.guests[uuid].latest["balloon_cur"]
                applied = evaluation.applied_balloons.get(uuid)
                if applied is None:
                    assert new == old
                    continue
                assert new == applied < old
                # The step is bounded by 5 % and the floor the policy computes
                # (the test driver reports half the balloon as unused).
                assert old - new <= 0.05 * old + 1
                assert new >= old * 0.5 + 0.2 * (0.10 / 0.20) * old - 1
            # KSM was asked to run on the pressed host (temporary sysfs tree).
            ksm_run = (fake_host.sys / "kernel/mm/ksm/run").read_text().strip()
            assert evaluation.applied_ksm.get("run", int(ksm_run)) == 1
        finally:
            await engine.stop()

    run(body())


def test_comfortable_host_grows_ballooned_guests_back(run, tmp_path, fake_host, specs):
    node = write_node_xml(tmp_path / "node.xml", specs)

    async def body() -> None:
        engine, _ = make_engine(node, fake_host, shipped_policies())
        await engine.start()
        try:
            evaluation = engine.last_evaluation
            assert evaluation is not None and evaluation.reason == "start"
            ballooned = {s.uuid for s in specs if s.current_kib < s.memory_kib}
            assert ballooned and set(evaluation.applied_balloons) == ballooned
            for spec in specs:
                if spec.uuid in ballooned:
                    assert spec.current_kib < evaluation.applied_balloons[spec.uuid] \
                        <= spec.memory_kib
        finally:
            await engine.stop()

    run(body())


def test_clamp_to_the_balloon_floor(run, tmp_path, fake_host):
    spec = GuestSpec("small", "5f0c6c4e-0000-4000-8000-000000000001", 2 * GiB, 2 * GiB)
    node = write_node_xml(tmp_path / "node.xml", [spec])
    policies = PolicySet({"p": '(with Guests g (g.Control "balloon_target" 1024))'})

    async def body() -> None:
        engine, _ = make_engine(node, fake_host, policies, floor=GiB)
        await engine.start()
        try:
            assert engine.last_evaluation.applied_balloons == {spec.uuid: GiB}
            await engine.collect_guests()
            assert engine.guests[spec.uuid].latest["balloon_cur"] == GiB
            # Asking again for the same clamped size sends nothing.
            assert (await engine.evaluate()).applied_balloons == {}
        finally:
            await engine.stop()

    run(body())


def test_dry_run_writes_nothing(run, tmp_path, fake_host, specs):
    node = write_node_xml(tmp_path / "node.xml", specs)
    fake_host.set_memory(64 * GiB, int(64 * GiB * 0.10))
    ksm_files = {p.name: p.read_text() for p in (fake_host.sys / "kernel/mm/ksm").iterdir()}

    async def body() -> None:
        engine, _ = make_engine(node, fake_host, shipped_policies(), dry_run=True)
        await engine.start()
        try:
            evaluation = await engine.evaluate()
            assert evaluation.dry_run and evaluation.guest_controls
            await engine.collect_guests()
            for spec in specs:
                assert engine.guests[spec.uuid].latest["balloon_cur"] == spec.current_kib
        finally:
            await engine.stop()

    run(body())
    assert {p.name: p.read_text() for p in (fake_host.sys / "kernel/mm/ksm").iterdir()} \
        == ksm_files


def test_policy_error_applies_nothing_and_the_loop_goes_on(run, tmp_path, fake_host, specs):
    node = write_node_xml(tmp_path / "node.xml", specs)
    policies = PolicySet({
        "a": '(with Guests g (g.Control "balloon_target" (/ g.balloon_max 2)))',
        "b": "(undefined_thing)"})

    async def body() -> None:
        engine, recorder = make_engine(node, fake_host, policies)
        await engine.start()
        try:
            first = engine.last_evaluation
            assert first.result.error is not None and "undefined" in str(first.result.error)
            assert first.applied_balloons == {}
            # The periodic evaluation keeps running, and a fixed set acts.
            policies.delete_policy("b")
            await wait_for(lambda: any(e.applied_balloons for e in recorder.evaluations),
                           timeout=10, what="an evaluation that applies")
        finally:
            await engine.stop()
        await engine.hypervisor.close()

    run(body())


def test_guests_come_and_go_with_lifecycle_events(run, tmp_path, fake_host, specs):
    node = write_node_xml(tmp_path / "node.xml", specs)
    extra = guest_specs(1, prefix="extra", min_guarantee_every=0)[0]

    async def body() -> None:
        engine, recorder = make_engine(node, fake_host, shipped_policies())
        await engine.start()
        try:
            conn = engine.hypervisor.connection
            dom = conn.createXML(domain_xml(extra), 0)
            await wait_for(lambda: extra.uuid in engine.guests, what="new guest managed")
            await wait_for(lambda: engine.guests[extra.uuid].latest, what="its first sample")
            dom.destroy()
            await wait_for(lambda: extra.uuid not in engine.guests, what="guest gone")
            assert recorder.added.count(extra.uuid) == 1
            assert recorder.removed == [extra.uuid]
            # The loops survived a guest vanishing under them.
            assert all(not t.done() for t in engine._tasks)  # noqa: SLF001
        finally:
            await engine.stop()

    run(body())


def test_pressure_trigger_evaluates_at_once(run, tmp_path, fake_host, specs):
    """The trigger path itself: pressure_rose() samples, evaluates and applies
    without waiting for the policy interval (the PSI file is tested apart)."""
    node = write_node_xml(tmp_path / "node.xml", specs)

    async def body() -> None:
        engine, recorder = make_engine(node, fake_host, shipped_policies())
        engine.policy_interval = 3600  # only the trigger can evaluate now
        await engine.start()
        try:
            await engine.evaluate()  # settle: grow everyone back first
            await engine.collect_guests()
            fake_host.set_memory(64 * GiB, int(64 * GiB * 0.08))
            count = len(recorder.evaluations)
            engine.pressure_rose()
            await wait_for(lambda: len(recorder.evaluations) > count, timeout=5,
                           what="an evaluation after the trigger")
            evaluation = recorder.evaluations[-1]
            assert evaluation.reason == "pressure" and evaluation.applied_balloons
            assert evaluation.trigger_time is not None
        finally:
            await engine.stop()

    run(body())


def test_engine_survives_libvirtd_restart(run, tmp_path, fake_host, private_libvirtd):
    async def body() -> None:
        uri = private_libvirtd.uri("test", "/default")
        hv = LibvirtHypervisor(uri, reconnect_min=0.1, reconnect_max=0.5)
        engine = Engine(hv, HostCollector(fake_host.proc, fake_host.sys), shipped_policies(),
                        [BalloonController(hv)],
                        host_interval=0.2, guest_interval=0.2, manager_interval=0.3,
                        policy_interval=0.3, history_length=2)
        recorder = Recorder()
        engine.observers.append(recorder)
        await engine.start()
        try:
            assert len(engine.guests) == 1  # test:///default has one running domain
            uuid = next(iter(engine.guests))
            private_libvirtd.kill()
            await wait_for(lambda: not hv.connected, timeout=10, what="connection lost")
            count = len(recorder.evaluations)
            await wait_for(lambda: len(recorder.evaluations) > count + 2, timeout=10,
                           what="evaluations while libvirtd is down")
            assert engine.stale
            private_libvirtd.start()
            await wait_for(lambda: hv.connected, timeout=20, what="reconnected")
            await wait_for(lambda: not engine.stale, timeout=10, what="fresh samples")
            assert uuid in engine.guests
            assert all(not t.done() for t in engine._tasks)  # noqa: SLF001
        finally:
            await engine.stop()

    run(body(), timeout=90)


def test_a_misspelt_control_is_named_once(run, tmp_path, fake_host, specs, caplog):
    node = write_node_xml(tmp_path / "node.xml", specs)
    policies = PolicySet({"p": '(with Guests g (g.Control "balon_target" 1))'})

    async def body() -> None:
        engine, _ = make_engine(node, fake_host, policies)
        await engine.start()
        try:
            await engine.evaluate()
        finally:
            await engine.stop()

    run(body())
    warnings = [r.getMessage() for r in caplog.records if "balon_target" in r.getMessage()]
    assert len(warnings) == 1 and "balloon_target" in warnings[0]


def test_a_guest_gone_while_its_sample_waited_does_not_come_back(run, tmp_path, fake_host, specs):
    # The sample is taken, then waits for the evaluation lock; the guest's
    # lifecycle event removes it meanwhile.  Seen in benchmarks/churn_bench.py
    # as a guest re-added to the bus after it was destroyed.
    node = write_node_xml(tmp_path / "node.xml", specs)

    async def body() -> None:
        engine, recorder = make_engine(node, fake_host, shipped_policies())
        await engine.connect()
        try:
            victim = specs[0].uuid
            dom = engine.hypervisor.connection.lookupByUUIDString(victim)
            async with engine._evaluation_lock:  # noqa: SLF001 - an evaluation in progress
                collecting = asyncio.ensure_future(engine.collect_guests())
                await asyncio.sleep(0.05)   # collect() has returned; the lock is awaited
                dom.destroy()
                await wait_for(lambda: victim not in engine.guests, what="guest removed")
            await collecting
            assert victim not in engine.guests
            assert recorder.removed == [victim]
            assert recorder.added.count(victim) == 1   # at connect, never again
        finally:
            await engine.stop()

    run(body())
