"""LibvirtHypervisor surviving its daemon: killed, restarted, reconnected.

A private libvirtd (see tests/helpers/private_libvirtd.py) serves the test
driver over its own socket; the host's libvirtd, if any, is never touched.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import libvirt
import pytest

from momservice.hypervisor import HypervisorError
from momservice.hypervisor.libvirt import LibvirtHypervisor
from momservice.hypervisor.libvirt_eventloop import bind_event_loop, settle
from tests.helpers.hypervisor_listener import RecordingListener, wait_for
from tests.helpers.libvirt_node import domain_xml, guest_specs, write_node_xml
from tests.helpers.private_libvirtd import PrivateLibvirtd

LOGGER = "momservice.hypervisor.libvirt"


def test_remote_test_driver_through_private_daemon(run, private_libvirtd: PrivateLibvirtd,
                                                   tmp_path: Path) -> None:
    """The premise of the other tests: the daemon serves the test driver."""
    node = write_node_xml(tmp_path / "node.xml", 2)

    async def body() -> None:
        # Once libvirt's event loop is ours, every connection of the process
        # uses it: open this one on a running loop too, and let it settle.
        bind_event_loop(asyncio.get_running_loop())
        conn = libvirt.open(private_libvirtd.uri("test", str(node)))
        try:
            assert conn.getURI().startswith("test+unix://")
            assert len(conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)) == 2
        finally:
            conn.close()
            await settle()

    run(body())


def test_daemon_killed_and_restarted(run, private_libvirtd: PrivateLibvirtd,
                                     tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    daemon = private_libvirtd
    specs = guest_specs(3)
    node = write_node_xml(tmp_path / "node.xml", specs)
    uuids = {s.uuid for s in specs}
    # Lives only in the first daemon's (per-connection) state.
    ephemeral = guest_specs(1, prefix="ephemeral")[0]
    later = guest_specs(1, prefix="later")[0]

    async def body() -> None:
        listener = RecordingListener()
        hv = LibvirtHypervisor(daemon.uri("test", str(node)),
                               reconnect_min=0.05, reconnect_max=0.2)
        await hv.start(listener)
        try:
            assert hv.connected and listener.connection == [True]
            assert set(listener.added) == uuids
            assert set(await hv.collect()) == uuids

            hv.connection.createXML(domain_xml(ephemeral), 0)
            await wait_for(lambda: ephemeral.uuid in listener.added, what="ephemeral added")

            daemon.kill()
            await wait_for(lambda: listener.connection == [True, False], timeout=15,
                           what="connection_changed(False)")
            assert not hv.connected
            # Meanwhile: nothing raises, nothing is reported.
            for _ in range(5):
                assert await hv.collect() == {}
                await hv.resync()
                await asyncio.sleep(0.1)   # several backoff rounds fail
            with pytest.raises(HypervisorError):
                await hv.set_balloon_target(specs[0].uuid, 1024)
            assert listener.connection == [True, False]
            assert ephemeral.uuid not in listener.removed   # guests are kept

            await asyncio.to_thread(daemon.start)
            await wait_for(lambda: listener.connection == [True, False, True], timeout=15,
                           what="connection_changed(True)")
            assert hv.connected
            # The resync on reconnect: the new daemon never had the ephemeral
            # guest, the node's guests are still there (not re-added).
            await wait_for(lambda: ephemeral.uuid in listener.removed, what="ephemeral removed")
            assert set(hv.guests()) == uuids
            assert sum(1 for kind, _ in listener.events if kind == "added") == len(uuids) + 1
            assert set(await hv.collect()) == uuids
            await hv.set_balloon_target(specs[1].uuid, specs[1].memory_kib // 2)
            assert (await hv.collect())[specs[1].uuid]["balloon_cur"] == specs[1].memory_kib // 2

            # Events flow on the new connection.
            hv.connection.createXML(domain_xml(later), 0)
            await wait_for(lambda: later.uuid in listener.added, what="event after reconnect")
        finally:
            await hv.close()

    run(body(), timeout=90)
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]
    lost = [m for level, m in messages if level == logging.WARNING]
    back = [m for level, m in messages if "reconnected" in m]
    assert len(lost) == 1, messages   # one warning per outage, not per retry
    assert len(back) == 1, messages


def test_two_outages_each_logged_once(run, private_libvirtd: PrivateLibvirtd,
                                      tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    daemon = private_libvirtd
    node = write_node_xml(tmp_path / "node.xml", 2)

    async def body() -> None:
        listener = RecordingListener()
        hv = LibvirtHypervisor(daemon.uri("test", str(node)),
                               reconnect_min=0.05, reconnect_max=0.1)
        await hv.start(listener)
        try:
            for outage in range(1, 3):
                # A clean stop this time, and a kill the next.
                if outage == 1:
                    await asyncio.to_thread(daemon.stop)
                else:
                    daemon.kill()
                await wait_for(lambda: not hv.connected, timeout=15, what="disconnect")
                assert await hv.collect() == {}
                await asyncio.sleep(0.3)
                await asyncio.to_thread(daemon.start)
                await wait_for(lambda: hv.connected, timeout=15, what="reconnect")
                assert len(await hv.collect()) == 2
            assert listener.connection == [True, False, True, False, True]
            assert len(listener.added) == 2 and not listener.removed
        finally:
            await hv.close()

    run(body(), timeout=90)
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]


class _WithoutCloseCallback(LibvirtHypervisor):
    """As if the driver had no close callback: only failing calls tell."""

    def _subscribe_sync(self, conn: libvirt.virConnect) -> int:
        callback_id = super()._subscribe_sync(conn)
        conn.unregisterCloseCallback()
        return callback_id


def test_loss_detected_by_failing_call(run, private_libvirtd: PrivateLibvirtd,
                                       tmp_path: Path) -> None:
    daemon = private_libvirtd
    node = write_node_xml(tmp_path / "node.xml", 2)

    async def body() -> None:
        listener = RecordingListener()
        hv = _WithoutCloseCallback(daemon.uri("test", str(node)),
                                   reconnect_min=0.05, reconnect_max=0.1)
        await hv.start(listener)
        try:
            assert len(await hv.collect()) == 2
            daemon.kill()
            await asyncio.sleep(0.3)
            assert listener.connection == [True]      # nobody told us yet
            assert await hv.collect() == {}           # the call fails: now we know
            assert listener.connection == [True, False]
            await asyncio.to_thread(daemon.start)
            await wait_for(lambda: listener.connection == [True, False, True], timeout=15,
                           what="reconnect")
            assert len(await hv.collect()) == 2
        finally:
            await hv.close()

    run(body(), timeout=60)
