"""GuestQemuAgent's reader, with a real qemu-ga on this host.

Debian's ``qemu-ga`` (unpacked from ``qemu-guest-agent`` by
tests/helpers/guest_image.py, never installed) runs here in its
``unix-listen`` mode: the socket MoM's ``socket_path`` and
``socket_name_template`` name, which the reader uses for a guest libvirt
has no agent channel for.  The agent answers with this host's own
/proc/meminfo and /proc/vmstat.  The guests are libvirt test-driver
domains (that driver has no agent of its own: libvirt's route is checked
by tests/e2e/test_guest_agent.py on a real QEMU guest).  A hung agent is
the real one stopped with SIGSTOP.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from momservice.collectors.meminfo import parse_meminfo
from momservice.hypervisor.libvirt import LibvirtHypervisor
from momservice.hypervisor.libvirt_agent import AgentOptions, QemuAgentReader
from tests.helpers.guest_image import GuestImageError, agent_binary
from tests.helpers.hypervisor_listener import RecordingListener, wait_for
from tests.helpers.libvirt_node import domain_xml, guest_specs, node_uri, write_node_xml
from tests.helpers.polling import wait_until

HOST_MEMTOTAL = parse_meminfo(Path("/proc/meminfo").read_text())["MemTotal"]
AGENT_LOG = "momservice.hypervisor.libvirt_agent"


@pytest.fixture(scope="module")
def qemu_ga() -> Path:
    try:
        return agent_binary()
    except GuestImageError as e:
        pytest.skip(f"no qemu-ga to run here: {e}")


class HostAgent:
    """qemu-ga listening on a UNIX socket of ours."""

    def __init__(self, binary: Path, socket_path: Path, state: Path) -> None:
        state.mkdir(parents=True, exist_ok=True)
        self.socket = socket_path
        self.process = subprocess.Popen(
            [str(binary), "-m", "unix-listen", "-p", str(socket_path), "-t", str(state),
             "-f", str(state / "qemu-ga.pid")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(lambda: socket_path.exists() or self.process.poll() is not None,
                   "qemu-ga to listen", timeout=60)
        if self.process.poll() is not None:
            raise AssertionError(f"qemu-ga exited: {self.process.stderr.read()!r}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stderr.close()


@pytest.fixture
def agents(qemu_ga: Path, tmp_path: Path) -> Iterator[dict[str, HostAgent]]:
    """Real agents for guests 0 and 2 of guest_specs(3), on MoM's default
    socket name template; guest 1 has none."""
    started: dict[str, HostAgent] = {}
    sockets = tmp_path / "sockets"
    sockets.mkdir()
    try:
        for spec in (guest_specs(3)[0], guest_specs(3)[2]):
            started[spec.uuid] = HostAgent(qemu_ga, sockets / f"{spec.name}.agent",
                                           tmp_path / f"state-{spec.name}")
        yield started
    finally:
        for agent in started.values():
            agent.stop()


def _hypervisor(tmp_path: Path, collectors: list[str], timeout: str = "2") -> LibvirtHypervisor:
    path = write_node_xml(tmp_path / "node.xml", 3)
    return LibvirtHypervisor(
        node_uri(path), collectors=collectors,
        collector_options={"GuestQemuAgent": {"socket_path": str(tmp_path / "sockets"),
                                              "timeout": timeout}})


def _reader(hv: LibvirtHypervisor) -> QemuAgentReader:
    (reader,) = [r for r in hv._readers if r.collector == "GuestQemuAgent"]
    return reader.per_domain.__self__


async def _collect_until(hv: LibvirtHypervisor, predicate, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        samples = await hv.collect()
        if predicate(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {samples}")
        await asyncio.sleep(0.05)


def test_agent_listed_first_its_figures_win(run, tmp_path, agents):
    specs = guest_specs(3)

    async def body() -> None:
        hv = _hypervisor(tmp_path, ["GuestQemuAgent", "GuestMemory", "GuestBalloon"])
        await hv.start(RecordingListener())
        try:
            samples = await _collect_until(
                hv, lambda s: all(s[spec.uuid].get("mem_available") == HOST_MEMTOTAL
                                  for spec in (specs[0], specs[2])),
                "the agents' figures")
        finally:
            await hv.close()
        for spec in (specs[0], specs[2]):
            sample = samples[spec.uuid]
            # This host's memory, not the test driver's balloon figures.
            assert sample["mem_available"] == HOST_MEMTOTAL != spec.memory_kib
            assert 0 < sample["mem_unused"] < HOST_MEMTOTAL
            assert sample["minor_fault"] >= sample["major_fault"]
            assert sample["stats_age"] >= 0
            assert "swap_total" in sample and "swap_usage" in sample
            assert sample["balloon_cur"] == spec.current_kib
        # Guest 1 has no agent: its balloon's figures, no agent fields.
        assert samples[specs[1].uuid]["mem_available"] != HOST_MEMTOTAL
        assert "swap_total" not in samples[specs[1].uuid]

    run(body())


def test_agent_listed_after_guest_memory_only_fills_gaps(run, tmp_path, agents):
    specs = guest_specs(3)

    async def body() -> None:
        hv = _hypervisor(tmp_path, ["GuestMemory", "GuestBalloon", "GuestQemuAgent"])
        await hv.start(RecordingListener())
        try:
            samples = await _collect_until(hv, lambda s: "swap_total" in s[specs[0].uuid],
                                           "the agent's figures")
        finally:
            await hv.close()
        sample = samples[specs[0].uuid]
        # MoM's rule: the collector listed first wins.  The test driver's
        # balloon reports memory (not this host's), the agent the swap.
        assert sample["mem_available"] != HOST_MEMTOTAL
        assert sample["swap_total"] == parse_meminfo(Path("/proc/meminfo").read_text())[
            "SwapTotal"]

    run(body())


def test_a_hung_agent_stalls_neither_the_collection_nor_the_other_guests(
        run, tmp_path, agents, caplog):
    specs = guest_specs(3)
    hung, live = agents[specs[0].uuid], agents[specs[2].uuid]
    caplog.set_level(logging.INFO, logger=AGENT_LOG)

    async def body() -> None:
        hv = _hypervisor(tmp_path, ["GuestQemuAgent", "GuestMemory"], timeout="1")
        await hv.start(RecordingListener())
        reader = _reader(hv)
        try:
            await _collect_until(hv, lambda s: all("swap_total" in s[u] for u in agents),
                                 "both agents' figures")
            hung.process.send_signal(signal.SIGSTOP)
            # A read of the stopped agent's guest starts and hangs ...
            await _collect_until(hv, lambda s: reader._guests[specs[0].uuid].pending
                                 and "swap_total" not in s[specs[0].uuid]
                                 or reader._guests[specs[0].uuid].failing, "a hung read")
            # ... while the other guest's agent is read again and again.
            reads = []
            def fresh(samples) -> bool:
                reads.append(reader._guests[specs[2].uuid].fields.get("_last_update"))
                return len(set(filter(None, reads))) >= 3
            await _collect_until(hv, fresh, "new readings of the live agent")
            # The hung read ends (timeout): its guest loses the agent's figures.
            samples = await _collect_until(
                hv, lambda s: reader._guests[specs[0].uuid].failing, "the hung read to fail")
            assert samples[specs[0].uuid]["mem_available"] != HOST_MEMTOTAL
            hung.process.send_signal(signal.SIGCONT)
            await _collect_until(hv, lambda s: s[specs[0].uuid]["mem_available"]
                                 == HOST_MEMTOTAL, "the agent to answer again")
        finally:
            hung.process.send_signal(signal.SIGCONT)
            await hv.close()
        warnings = [r.getMessage() for r in caplog.records
                    if r.name == AGENT_LOG and r.levelno == logging.WARNING]
        assert len(warnings) == 1 and specs[0].name in warnings[0], warnings
        assert any("answers again" in r.getMessage() for r in caplog.records
                   if r.name == AGENT_LOG and r.levelno == logging.INFO)

    run(body(), timeout=180)
    assert live.process.poll() is None


def test_a_guest_without_agent_channel_or_socket_costs_no_read(run, tmp_path):
    (tmp_path / "sockets").mkdir()

    async def body() -> None:
        hv = _hypervisor(tmp_path, ["GuestMemory", "GuestQemuAgent"])
        await hv.start(RecordingListener())
        try:
            for _ in range(3):
                samples = await hv.collect()
            reader = _reader(hv)
            assert len(samples) == 3
            assert not any("swap_total" in s for s in samples.values())
            assert reader._workers.running == 0   # not one read was started
            assert all(g.channel is False for g in reader._guests.values())
        finally:
            await hv.close()

    run(body())


AGENT_CHANNEL_XML = ("<channel type='unix'><source mode='bind' path='{path}'/>"
                     "<target type='virtio' name='org.qemu.guest_agent.0'{state}/></channel>")


@pytest.mark.parametrize("state, expected", [
    ("", (True, None)), (" state='connected'", (True, True)),
    (" state='disconnected'", (True, False)),
])
def test_definition_notes_the_agent_channel_and_its_state(state, expected):
    spec = guest_specs(1)[0]
    xml = domain_xml(spec).replace(
        "</devices>", AGENT_CHANNEL_XML.format(path="/x", state=state) + "</devices>")
    reader = QemuAgentReader(AgentOptions())
    assert reader.definition(xml) == {}
    guest = reader._guests[spec.uuid]
    assert (guest.channel, guest.connected) == expected
    assert guest.name == spec.name


def test_an_agent_that_stops_takes_its_figures_along():
    spec = guest_specs(1)[0]
    def xml(state: str) -> str:
        return domain_xml(spec).replace(
            "</devices>", AGENT_CHANNEL_XML.format(path="/x", state=state) + "</devices>")
    reader = QemuAgentReader(AgentOptions())
    reader.definition(xml(" state='connected'"))
    guest = reader._guests[spec.uuid]
    guest.fields = {"mem_unused": 1}
    reader.definition(xml(" state='connected'"))
    assert guest.fields == {"mem_unused": 1}
    reader.definition(xml(" state='disconnected'"))
    assert guest.fields == {} and guest.connected is False


def test_a_driver_without_agent_commands_is_logged_once_and_leaves_the_sample(
        run, tmp_path, caplog):
    """The test driver has an agent channel in the definition but no agent
    command: the reader's failure is the guest's missing figures, not the
    collection's."""
    spec = guest_specs(1, prefix="channel")[0]
    path = write_node_xml(tmp_path / "node.xml", [])

    async def body() -> None:
        hv = LibvirtHypervisor(node_uri(path), collectors=["GuestQemuAgent", "GuestMemory"])
        await hv.start(RecordingListener())
        reader = _reader(hv)
        try:
            hv.connection.createXML(domain_xml(spec).replace(
                "</devices>", AGENT_CHANNEL_XML.format(path=tmp_path / "x", state="")
                + "</devices>"), 0)
            await wait_for(lambda: spec.uuid in hv.guests(), what="the guest")
            samples = await _collect_until(
                hv, lambda s: spec.uuid in reader._guests and reader._guests[spec.uuid].failing,
                "the agent read to fail")
        finally:
            await hv.close()
        assert samples[spec.uuid]["balloon_cur"] == spec.current_kib
        assert "swap_total" not in samples[spec.uuid]

    run(body())
    warnings = [r.getMessage() for r in caplog.records if r.name == AGENT_LOG]
    assert len(warnings) == 1 and "not supported" in warnings[0], warnings


def test_options_as_configured_and_moms_defaults():
    assert AgentOptions.from_config({}) == AgentOptions(
        timeout=2.0, socket_path=Path("/var/lib/libvirt/qemu"),
        socket_name_template="%(name)s.agent")
    options = AgentOptions.from_config({"timeout": "0.5", "socket_path": "/run/qga",
                                        "socket_name_template": "qga-%(name)s"})
    assert options.timeout == 0.5
    assert options.socket_for("vm1") == Path("/run/qga/qga-vm1")
    # MoM's fallback for a template naming something else (the loader
    # refuses such a template; a reader made without it still copes).
    assert AgentOptions(socket_name_template="%(uuid)s").socket_for("vm1") == \
        Path("/var/lib/libvirt/qemu/vm1.agent")


def test_each_hypervisor_binds_a_reader_of_its_own(tmp_path):
    first = _hypervisor(tmp_path, ["GuestQemuAgent"], timeout="3")
    second = _hypervisor(tmp_path, ["GuestQemuAgent"], timeout="4")
    assert _reader(first) is not _reader(second)
    assert (_reader(first).options.timeout, _reader(second).options.timeout) == (3.0, 4.0)
