"""Why did my guest shrink?  A bounded record of every control applied.

After each evaluation that applied something, :class:`ExplainLog` keeps,
per guest (and for the host), what changed (control, from, to), which
``Control`` call of which policy file and line set the winning value, and
the inputs: the statistics the policy set's code reads (``PolicySet.reads``,
a static reading of the code), with their values in the sample evaluated.

Bounded twice: at most ``length`` records per guest (a ring: the oldest
goes first) and none older than ``max_age`` seconds.  Only guests with
something applied hold records, the records of an evaluation share their
field names and the host's values, a guest's records its inputs while
they repeat, and a guest's ring goes with the guest: with a thousand
guests all changing at every evaluation, the defaults (20 records) hold
about 5.5 MiB, 8 MiB if all their inputs change too
(``tests/engine/test_explain_log.py`` measures the first).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from operator import is_
from typing import Any

from ..policy import Entity, PolicyError
from .core import Engine, EngineObserver, Evaluation

#: Records kept per guest, and for how long (seconds): ``[main]
#: explain-length`` and ``explain-max-age``.
DEFAULT_LENGTH = 20
DEFAULT_MAX_AGE = 24 * 3600.0

#: The statistic that shows where a control stands before it is applied,
#: when it is not the control's own name (the host's ``ksm_run`` is both).
CURRENT_VALUE_OF: dict[str, str] = {"balloon_target": "balloon_cur"}

#: The key under which the host's records are kept.
HOST = "host"

#: Finds the file a policy came from, by its name (None: unknown).
Locate = Callable[[str], "str | None"]


class Inputs:
    """Statistic names and their values: names shared by the records of one
    evaluation, values per entity."""

    __slots__ = ("names", "values")

    def __init__(self, names: tuple[str, ...], values: tuple) -> None:
        self.names = names
        self.values = values

    def as_dict(self) -> dict[str, Any]:
        return {n: v for n, v in zip(self.names, self.values) if _shown(v) is not None}


class Change:
    """One control applied: from what to what, set where."""

    __slots__ = ("control", "before", "after", "policy", "line", "file")

    def __init__(self, control: str, before: Any, after: Any, policy: str | None,
                 line: int | None, file: str | None) -> None:
        self.control = control
        self.before = before
        self.after = after
        self.policy = policy
        self.line = line
        self.file = file

    def as_dict(self) -> dict[str, Any]:
        return {"control": self.control, "from": _shown(self.before), "to": _shown(self.after),
                "policy": self.policy, "line": self.line, "file": self.file}


class Moment:
    """What the records of one evaluation share: when, why, the names of the
    statistics read and the host's values."""

    __slots__ = ("time", "reason", "dry_run", "guest_names", "mean_names", "host", "host_means")

    def __init__(self, time: float, reason: str, dry_run: bool, guest_names: tuple[str, ...],
                 mean_names: tuple[str, ...], host: Inputs, host_means: Inputs) -> None:
        self.time = time
        self.reason = reason
        self.dry_run = dry_run
        self.guest_names = guest_names
        self.mean_names = mean_names
        self.host = host
        self.host_means = host_means


class Record:
    """What one evaluation applied to one guest (or the host), and on what inputs.

    Four slots: with a thousand guests every byte of a record counts twenty
    thousand times; the rest is the evaluation's (``Moment``).
    """

    __slots__ = ("moment", "changes", "values", "means")

    def __init__(self, moment: Moment, changes: tuple[Change, ...], values: tuple = (),
                 means: tuple = ()) -> None:
        self.moment = moment
        self.changes = changes
        self.values = values
        self.means = means

    @property
    def time(self) -> float:
        return self.moment.time

    @property
    def reason(self) -> str:
        return self.moment.reason

    @property
    def dry_run(self) -> bool:
        return self.moment.dry_run

    @property
    def inputs(self) -> Inputs:
        """The guest's statistics the policies read (none for the host's records)."""
        return Inputs(self.moment.guest_names if self.values else (), self.values)

    @property
    def guest_means(self) -> Inputs:
        return Inputs(self.moment.mean_names if self.means else (), self.means)

    @property
    def host(self) -> Inputs:
        return self.moment.host

    @property
    def host_means(self) -> Inputs:
        return self.moment.host_means

    def as_dict(self) -> dict[str, Any]:
        """The record as plain JSON-able values (see docs: ``Explain``)."""
        return {"time_usec": int(self.time * 1_000_000), "reason": self.reason,
                "dry_run": self.dry_run, "changes": [c.as_dict() for c in self.changes],
                "inputs": {"guest": self.inputs.as_dict(), "host": self.host.as_dict(),
                           "guest_means": self.guest_means.as_dict(),
                           "host_means": self.host_means.as_dict()}}


class ExplainLog(EngineObserver):
    """The applied controls of the last ``max_age`` seconds, at most ``length``
    per guest, with their reasons; fed by the engine after each evaluation."""

    def __init__(self, engine: Engine, *, length: int = DEFAULT_LENGTH,
                 max_age: float = DEFAULT_MAX_AGE, locate: Locate | None = None) -> None:
        if length < 1:
            raise ValueError("length must be at least 1")
        self.engine = engine
        self.length = length
        self.max_age = max_age
        self.locate = locate
        self.records: dict[str, deque[Record]] = {}
        self._files: dict[str, tuple[str, str | None]] = {}  # policy -> (its text, file)

    # -- the engine's hooks ---------------------------------------------------------

    def guest_removed(self, uuid: str) -> None:
        self.records.pop(uuid, None)

    def evaluated(self, evaluation: Evaluation) -> None:
        if not evaluation.changed or evaluation.result.error is not None:
            return
        engine = self.engine
        reads = engine.policies.reads
        origins = evaluation.result.control_origins
        host = engine.host
        moment = Moment(evaluation.started, evaluation.reason, evaluation.dry_run,
                        reads.guest, reads.guest_means, _inputs(host, reads.host),
                        _means(host, reads.host_means))
        guest_names, mean_names = reads.guest, reads.guest_means
        files: dict[str | None, str | None] = {}   # by policy, for this evaluation
        oldest = evaluation.started - self.max_age
        for key, controls in self._applied(evaluation).items():
            entity = host if key == HOST else engine.guests.get(key)
            if entity is None:
                continue
            ring = self.records.get(key)
            changes = []
            for name, value in controls.items():
                by_entity = origins.get(name)
                policy, line = (by_entity.get(entity) if by_entity else None) or (None, None)
                if policy not in files:
                    files[policy] = self._file(policy)
                before = entity.latest.get(CURRENT_VALUE_OF.get(name, name))
                if before is None and ring:
                    before = _last_value(ring, name)
                changes.append(Change(name, before, value, policy, line, files[policy]))
            if entity is host:
                record = Record(moment, tuple(changes))
            else:
                values = tuple(map(entity.latest.get, guest_names))
                means = _means(entity, mean_names).values if mean_names else ()
                if ring:
                    last = ring[-1]
                    values = _shared(last.values, values)
                    if means:
                        means = _shared(last.means, means)
                record = Record(moment, tuple(changes), values, means)
            if ring is None:
                ring = self.records[key] = deque(maxlen=self.length)
            ring.append(record)
            if ring[0].moment.time < oldest:
                self._expire(ring, evaluation.started)

    # -- reading ----------------------------------------------------------------------

    def story(self, key: str, since: float = 0.0, now: float | None = None) -> list[Record]:
        """The records of a guest (by UUID) or of ``"host"`` taken at or after
        ``since`` (seconds since the epoch), oldest first."""
        ring = self.records.get(key)
        if not ring:
            return []
        self._expire(ring, self.engine.clock() if now is None else now)
        return [r for r in ring if r.time >= since]

    # -- helpers ------------------------------------------------------------------------

    def _applied(self, evaluation: Evaluation) -> dict[str, dict[str, Any]]:
        """What each mechanism reported applied, as control name -> value, by
        guest UUID (and ``"host"``)."""
        applied: dict[str, dict[str, Any]] = {}
        for mechanism in self.engine.mechanisms:
            report = evaluation.applied.get(mechanism.name)
            if not report:
                continue
            if mechanism.entity == "host":
                controls = applied.setdefault(HOST, {})
                for name, value in report.items():
                    controls[_host_control(name, mechanism.controls)] = value
                continue
            for uuid, value in report.items():
                controls = applied.setdefault(uuid, {})
                if isinstance(value, Mapping):
                    controls.update(value)
                elif len(mechanism.controls) == 1:
                    controls[next(iter(mechanism.controls))] = value
                else:
                    requested = evaluation.guest_controls.get(uuid, {})
                    controls.update((n, v) for n, v in requested.items()
                                    if n in mechanism.controls)
        return applied

    def _file(self, policy: str | None) -> str | None:
        """The file of ``policy``, looked up again only when its text changed."""
        if policy is None or self.locate is None:
            return None
        try:
            text = self.engine.policies.text(policy)
        except KeyError:
            text = None
        cached = self._files.get(policy)
        if cached is not None and cached[0] is text:
            return cached[1]
        try:
            file = self.locate(policy)
        except OSError:
            file = None
        self._files[policy] = (text, file)
        return file

    def _expire(self, ring: deque[Record], now: float) -> None:
        oldest = now - self.max_age
        while ring and ring[0].time < oldest:
            ring.popleft()


def _shown(value: Any) -> Any:
    # JSON has no NaN or infinity (JavaScript's JSON.parse refuses them).
    if type(value) is float and not math.isfinite(value):
        return None
    return value


def _host_control(name: str, controls: frozenset[str]) -> str:
    # KSM reports the sysfs file names it wrote (run, pages_to_scan, ...).
    if name in controls:
        return name
    prefixed = f"ksm_{name}"
    return prefixed if prefixed in controls else name


def _inputs(entity: Entity, names: tuple[str, ...]) -> Inputs:
    # The names tuple is the set's own, shared by every record.
    return Inputs(names, tuple(map(entity.latest.get, names)))


def _means(entity: Entity, names: tuple[str, ...]) -> Inputs:
    values = []
    for name in names:
        try:
            values.append(entity.stat_avg(name))
        except PolicyError:  # unknown to this entity, or not a number
            values.append(None)
    return Inputs(names, tuple(values))


def _shared(previous: tuple, values: tuple) -> tuple:
    # The previous record's tuple when it holds the very same objects: a
    # guest's inputs often repeat from one evaluation to the next (the
    # entity keeps a repeated value as the same object), and a full ring of
    # a thousand guests then kept twenty copies of each.
    if previous == values and all(map(is_, previous, values)):
        return previous
    return values


def _last_value(ring: deque[Record], name: str) -> Any:
    for record in reversed(ring):
        for change in record.changes:
            if change.control == name:
                return change.after
    return None
