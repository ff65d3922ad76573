"""A simulated PSI trigger: what the kernel does with the line momd writes.

momd writes a trigger such as ``some 150000 1000000`` to
/proc/pressure/memory (momservice.engine.pressure): the kernel signals
once the tasks' stall time grows by the threshold (150 ms) within the
window (1 s), and then at most once per window while it goes on.  The
simulated host keeps PSI's cumulative stall time; this model reads it
after each step of the simulation and says when the kernel would signal.

Pure: no I/O, no clock but the simulation's.
"""

from __future__ import annotations

from collections import deque

_US = 1_000_000.0


class PsiTriggerModel:
    """``observe(now, some_s, full_s)`` -> whether the trigger fires at ``now``."""

    def __init__(self, trigger: str) -> None:
        kind, threshold, window = parse_trigger(trigger)
        self.trigger = trigger
        self.kind = kind
        self.threshold = threshold          # seconds of stall...
        self.window = window                # ...within this many seconds
        self.events = 0
        self._history: deque[tuple[float, float]] = deque()   # (time, total stall)
        self._last_event: float | None = None

    def observe(self, now: float, some_seconds: float, full_seconds: float) -> bool:
        total = some_seconds if self.kind == "some" else full_seconds
        history = self._history
        history.append((now, total))
        # Keep one point at or before the window's start, to measure from.
        while len(history) > 2 and history[1][0] <= now - self.window:
            history.popleft()
        start_time, start_total = history[0]
        if now - start_time > self.window and len(history) > 1:
            # The window starts between two points: stall accrued evenly between them.
            (t0, s0), (t1, s1) = history[0], history[1]
            at = now - self.window
            start_total = s0 + (s1 - s0) * (at - t0) / (t1 - t0) if t1 > t0 else s1
        if total - start_total < self.threshold - 1e-12:
            return False
        if self._last_event is not None and now - self._last_event < self.window - 1e-9:
            return False   # the kernel signals at most once per window
        self._last_event = now
        self.events += 1
        return True


def parse_trigger(trigger: str) -> tuple[str, float, float]:
    """(``some``|``full``, threshold s, window s) of a PSI trigger line; ValueError if bad."""
    parts = trigger.split()
    if len(parts) != 3 or parts[0] not in ("some", "full"):
        raise ValueError(f"PSI trigger {trigger!r}: expected 'some|full THRESHOLD_US "
                         f"WINDOW_US'")
    try:
        threshold, window = int(parts[1]), int(parts[2])
    except ValueError:
        raise ValueError(f"PSI trigger {trigger!r}: threshold and window are "
                         f"microseconds") from None
    if not 0 < threshold <= window:
        raise ValueError(f"PSI trigger {trigger!r}: the threshold must be above 0 and "
                         f"within the window")
    return parts[0], threshold / _US, window / _US
