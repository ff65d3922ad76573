"""Talking to systemd: readiness, status line and watchdog (sd_notify)."""

from __future__ import annotations

import logging
import os
from typing import Callable

from .core import Engine, EngineObserver, Evaluation

log = logging.getLogger(__name__)

try:
    from systemd import daemon as _daemon
except ImportError:  # systemd-python is a dependency; tolerate its absence in tools
    _daemon = None


def notify(state: str) -> bool:
    """Send one sd_notify state; False when not run by systemd."""
    if _daemon is None or not os.environ.get("NOTIFY_SOCKET"):
        return False
    try:
        return bool(_daemon.notify(state))
    except OSError as e:
        log.debug("sd_notify(%r) failed: %s", state, e)
        return False


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half the unit's WatchdogSec), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None


class StatusNotifier(EngineObserver):
    """An engine observer keeping systemd's status line current; READY=1 after
    the first evaluation.  ``load_error`` says why the policy files are not
    the active ones (empty when they are)."""

    def __init__(self, engine: Engine, load_error: Callable[[], str]) -> None:
        self.engine = engine
        self.load_error = load_error
        self.ready = False

    def evaluated(self, evaluation: Evaluation) -> None:
        if not self.ready:
            self.ready = True
            notify("READY=1")
        if evaluation.result.error is not None:
            state = "policy error"
        elif self.load_error():
            state = "ok; policy files refused, see LastPolicyError"
        else:
            state = "ok"
        connected = "connected" if self.engine.hypervisor.connected else "hypervisor unreachable"
        notify(f"STATUS={len(self.engine.guests)} guests, {connected}, last evaluation "
               f"{evaluation.duration * 1000:.1f} ms ({state})")
