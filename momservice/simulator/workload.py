"""A guest's working set over simulated time, from a WorkloadSpec.

The randomness (noise, idle bursts) is drawn from the guest's own
``random.Random``, one value per fixed bucket of time, in bucket order: the
trace depends on the seed and on time only, not on how the caller steps.
A ``trace`` workload replays a recorded working set (see ``trace``), with
no noise: the recording has its own.
"""

from __future__ import annotations

import math
import random

from .scenario import WorkloadSpec

#: Seconds of simulated time per noise value (and per chance of a burst).
#: A modelling choice (the engine samples every 10 s by default).
BUCKET = 10.0

#: A working set never exceeds this share of the guest's maximum memory.
#: Assumed: the guest's kernel and reserved memory need the rest.
MAX_SHARE = 0.95


class Workload:
    """``working_set(t)``: the anonymous memory (KiB) the guest's load needs at ``t``."""

    def __init__(self, spec: WorkloadSpec, max_kib: float, rng: random.Random) -> None:
        self.kind = spec.kind
        self.params = dict(spec.params)
        self.max_kib = float(max_kib)
        self._rng = rng
        self._noise: list[float] = []
        self._bursts: list[bool] = []   # a burst starts in this bucket
        self._recorded = spec.trace
        self._offset = float(self.params.get("offset", 0.0))
        if self._recorded is None:
            self._shape = getattr(self, f"_{spec.kind}")

    def working_set(self, t: float) -> float:
        if self._recorded is not None:
            used = self._recorded.usage_at(max(0.0, t) + self._offset)
            return min(MAX_SHARE * self.max_kib, used)
        share = self._shape(max(0.0, t)) + self._noise_at(t)
        return self.max_kib * min(MAX_SHARE, max(0.0, share))

    # -- shapes (shares of the maximum) --------------------------------------

    def _steady(self, t: float) -> float:
        return self.params["level"]

    def _ramp(self, t: float) -> float:
        p = self.params
        progress = min(1.0, max(0.0, (t - p["begin"]) / p["length"]))
        return p["start"] + (p["end"] - p["start"]) * progress

    def _spike(self, t: float) -> float:
        p = self.params
        since = t - p["at"]
        if since < 0:
            return p["level"]
        if p["every"] > 0:
            since %= p["every"]
        return p["peak"] if since < p["length"] else p["level"]

    def _diurnal(self, t: float) -> float:
        p = self.params
        angle = 2 * math.pi * (t / p["period"] + p["phase"])
        return p["low"] + (p["high"] - p["low"]) * (1 - math.cos(angle)) / 2

    def _idle(self, t: float) -> float:
        p = self.params
        bucket = int(t // BUCKET)
        self._fill(bucket)
        # A burst that started within the last burst_length seconds is on.
        span = int(math.ceil(p["burst_length"] / BUCKET))
        for start in range(max(0, bucket - span + 1), bucket + 1):
            if self._bursts[start] and t - start * BUCKET < p["burst_length"]:
                return p["burst"]
        return p["level"]

    # -- randomness ----------------------------------------------------------

    def _noise_at(self, t: float) -> float:
        bucket = int(max(0.0, t) // BUCKET)
        self._fill(bucket)
        return self._noise[bucket]

    def _fill(self, bucket: int) -> None:
        noise = self.params.get("noise", 0.0)
        chance = self.params.get("bursts_per_hour", 0.0) * BUCKET / 3600.0
        rng = self._rng
        while len(self._noise) <= bucket:
            # Both drawn for every bucket, whatever the kind: the sequence
            # stays the same whichever function asks first.
            self._noise.append(rng.uniform(-noise, noise))
            self._bursts.append(rng.random() < chance)
