"""Waiting on a condition by polling, with a generous deadline (the machine is shared)."""

from __future__ import annotations

import time
from typing import Any, Callable


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 60.0,
               interval: float = 0.1) -> Any:
    """``predicate()``'s first true value, polled every ``interval`` s;
    AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
