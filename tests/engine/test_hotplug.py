"""Memory hotplug events reach the engine: a real kernel uevent, no fakes.

Writing an action to a memory block's ``uevent`` file makes the kernel
emit that uevent for the block without changing anything else; it is how
udevadm trigger works.  Needs root and /sys/devices/system/memory.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from momservice.engine.hotplug import MemoryHotplugMonitor
from tests.helpers.file_lock import machine_lock

BLOCK = Path("/sys/devices/system/memory/memory0/uevent")


#: Memory blocks' uevents are the machine's: another run of these tests on
#: it (a shared one, or CI beside a session) would otherwise send its
#: "online" into this one's "ignored" window.
UEVENT_LOCK = Path("/var/tmp/mom-tests-memory-uevents.lock")


def machine_wide_turn():
    return machine_lock(UEVENT_LOCK, "memory block uevents")


@pytest.mark.skipif(os.geteuid() != 0 or not BLOCK.exists(),
                    reason="needs root and /sys/devices/system/memory")
def test_a_memory_uevent_calls_back() -> None:
    async def body() -> int:
        calls = []
        monitor = MemoryHotplugMonitor(lambda: calls.append(1))
        assert monitor.start(asyncio.get_running_loop())
        try:
            BLOCK.write_text("online")
            for _ in range(100):
                if calls:
                    break
                await asyncio.sleep(0.02)
        finally:
            monitor.stop()
        return len(calls)

    with machine_wide_turn():
        assert asyncio.run(body()) >= 1


def test_other_uevents_are_ignored() -> None:
    if os.geteuid() != 0 or not BLOCK.exists():
        pytest.skip("needs root and /sys/devices/system/memory")

    async def body() -> int:
        calls = []
        monitor = MemoryHotplugMonitor(lambda: calls.append(1))
        assert monitor.start(asyncio.get_running_loop())
        try:
            BLOCK.write_text("change")  # not a hotplug: no fresh sample
            await asyncio.sleep(0.3)
        finally:
            monitor.stop()
        return len(calls)

    with machine_wide_turn():
        assert asyncio.run(body()) == 0
