"""Fixtures shared by the tests: an event-loop runner, a private libvirtd."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Awaitable, Callable, Iterator

import pytest

from tests.helpers.private_bus import system_bus_with_polkit
from tests.helpers.private_libvirtd import PrivateLibvirtd, find_libvirtd


@pytest.fixture
def run() -> Callable[..., Any]:
    """Run a coroutine to completion on a fresh loop, bounded by a timeout.

    A fresh loop per test also exercises moving libvirt's event loop
    integration (registered once per process) from one asyncio loop to the
    next, which every test after the first relies on.
    """

    def runner(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
        async def bounded() -> Any:
            return await asyncio.wait_for(coro, timeout)
        return asyncio.run(bounded())

    return runner


@pytest.fixture
def private_libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateLibvirtd]:
    """A running libvirtd of this test's own (test driver only), stopped after."""
    if os.geteuid() != 0:
        pytest.skip("a private libvirtd needs root")
    if find_libvirtd() is None:
        pytest.skip("libvirtd is not installed")
    # A short path: UNIX socket paths are limited to 107 bytes.
    daemon = PrivateLibvirtd(tmp_path_factory.mktemp("lvd"))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory):
    """A private system bus with the real polkitd on it, for one test module."""
    with system_bus_with_polkit(tmp_path_factory.mktemp("sysbus")) as system:
        yield system
