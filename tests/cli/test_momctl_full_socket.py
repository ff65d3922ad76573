"""momctl's connection waits when the bus reads slowly, as momd's does.

A bus busy with a thousand guests' signals may read a client's burst of
calls (``momctl monitor`` asks every guest at once) slower than it is
written: the socket fills.  The real dbus-daemon is stopped (SIGSTOP) while
the calls go out, so the buffer surely fills, then continued.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from dbus_next import Message
from dbus_next.aio import MessageBus

from momservice.cli.bus_client import MomClient
from tests.helpers.private_bus import skip_reason, system_bus_with_polkit

_reason = skip_reason(polkit=False)
pytestmark = [pytest.mark.skipif(_reason is not None, reason=_reason or ""),
              pytest.mark.timeout(120)]

CALLS = 5000  # some 600 KB of calls: more than a Unix socket buffers
REPO = Path(__file__).resolve().parents[2]
#: The same burst on dbus-next's own connection; prints how many calls failed.
PLAIN_CLIENT = """
import asyncio, os, sys
from dbus_next import BusType
from dbus_next.aio import MessageBus
from tests.cli.test_momctl_full_socket import burst

class Daemon:
    def send_signal(self, sig):
        os.kill(int(sys.argv[2]), sig)

async def main():
    bus = await MessageBus(bus_address=sys.argv[1], bus_type=BusType.SYSTEM).connect()
    replies = await burst(bus, Daemon())
    print(sum(isinstance(r, BaseException) for r in replies))

asyncio.run(main())
"""


async def burst(bus: MessageBus, daemon) -> list:
    """CALLS calls sent while the bus daemon is stopped; their replies."""
    message = dict(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                   interface="org.freedesktop.DBus", member="GetId")
    daemon.send_signal(signal.SIGSTOP)
    try:
        calls = [asyncio.ensure_future(bus.call(Message(**message))) for _ in range(CALLS)]
        await asyncio.sleep(1.0)
    finally:
        daemon.send_signal(signal.SIGCONT)
    return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 60)


def test_momctl_waits_for_a_full_socket(tmp_path):
    with system_bus_with_polkit(tmp_path, polkit=False) as system:
        async def momctl_client() -> list:
            client = await MomClient.connect(system.address)
            try:
                return await burst(client.bus, system.bus.process)
            finally:
                client.close()

        replies = asyncio.run(momctl_client())
        assert len(replies) == CALLS
        assert all(getattr(r, "body", None) and isinstance(r.body[0], str) for r in replies), \
            {type(r).__name__ for r in replies}

        # dbus-next's own connection drops instead: the burst does fill the
        # socket.  (In a process of its own: the failing burst leaves
        # CPython 3.11's recursion bookkeeping off for what runs after it.)
        plain = subprocess.run([sys.executable, "-c", PLAIN_CLIENT, system.address,
                                str(system.bus.process.pid)],
                               capture_output=True, text=True, timeout=90, cwd=REPO)
        assert plain.returncode == 0, plain.stderr
        assert int(plain.stdout.split()[-1]) > 0, "the burst never filled the socket"
