"""Tuning KSM: the only place mom writes to /sys/kernel/mm/ksm."""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..collectors.ksm import DEFAULT_KSM_DIR, KSM_FILES, KSM_TUNABLES, read_ksm
from ..errors import Failed, InvalidArgument
from .base import Decision, Mechanism, MechanismContext

log = logging.getLogger(__name__)

#: Policy control name -> sysfs file name (ksm_run -> run, ...): a host
#: control per tunable.
CONTROL_FILES: dict[str, str] = {KSM_FILES[name]: name for name in KSM_TUNABLES}

#: The order of writes (see KSM_TUNABLES).
WRITE_ORDER: tuple[str, ...] = KSM_TUNABLES

#: The kernel parses pages_to_scan and sleep_millisecs as unsigned int.
_UINT_MAX = 2**32 - 1


def _check(name: str, value: Any) -> int:
    """``value`` as what the kernel takes for the file ``name``; InvalidArgument if unfit.

    run is 0, 1 or 2 and merge_across_nodes 0 or 1 (whole numbers: 1.0 is
    accepted, 1.5 is not); pages_to_scan and sleep_millisecs are
    non-negative numbers, rounded down.
    """
    if name in ("run", "merge_across_nodes"):
        allowed = (0, 1, 2) if name == "run" else (0, 1)
        if (isinstance(value, (int, float))
                and (not isinstance(value, float) or value.is_integer())
                and int(value) in allowed):
            return int(value)
        raise InvalidArgument(f"KSM {name} must be one of "
                         f"{', '.join(map(str, allowed))}, got {value!r}")
    if name in ("pages_to_scan", "sleep_millisecs"):
        if (not isinstance(value, bool) and isinstance(value, (int, float))
                and math.isfinite(value) and 0 <= value <= _UINT_MAX):
            return int(value)
        raise InvalidArgument(f"KSM {name} must be a non-negative integer "
                         f"(at most {_UINT_MAX}), got {value!r}")
    raise InvalidArgument(f"unknown KSM setting {name!r}; known: {', '.join(WRITE_ORDER)}")


def _write_file(path: Path, text: str) -> None:
    """One write(2) of ``text`` to ``path``: sysfs reports a refusal right there.

    O_TRUNC, as ``echo N > FILE``: sysfs ignores it, and a regular file (a
    test's or the simulator's KSM directory) then holds just the new value.
    """
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class KsmController(Mechanism):
    """Applies KSM settings to the kernel, writing only what differs.

    The kernel's values are read afresh before every change (another tool
    may have changed them).  A merge_across_nodes change the kernel refuses
    with EBUSY, because pages are still shared, is retried after an unmerge
    (run=2, then waiting until pages_shared is 0); afterwards run is set to
    the requested value, or back to what it was.  Failed writes are logged,
    collected in ``last_errors`` and never raised.  With ``dry_run`` the
    decisions are logged and nothing is written.
    """

    name = "KSM"
    entity = "host"
    controls = frozenset(CONTROL_FILES)

    @classmethod
    def build(cls, context: MechanismContext) -> "KsmController":
        return cls(context.ksm_dir, dry_run=context.dry_run)

    def __init__(self, ksm_dir: Path = DEFAULT_KSM_DIR, *, dry_run: bool = False,
                 unmerge_timeout: float = 10.0, poll_interval: float = 0.05) -> None:
        self.ksm_dir = Path(ksm_dir)
        self.dry_run = dry_run
        self.unmerge_timeout = unmerge_timeout
        self.poll_interval = poll_interval
        #: What went wrong in the last apply/set, by file name ("read" for
        #: reading the current values), with a message for the admin.
        self.last_errors: dict[str, str] = {}
        self._read_failure: str | None = None

    # -- entry points ---------------------------------------------------------

    def check(self, control: str, value: Any) -> int:
        name = CONTROL_FILES.get(control)
        if name is None:
            raise InvalidArgument(f"the KSM mechanism has no control {control!r}; "
                                  f"known: {', '.join(sorted(CONTROL_FILES))}")
        return _check(name, value)

    async def act(self, decision: Decision) -> dict[str, int]:
        return await self.apply(decision.host_controls)

    async def apply(self, controls: Mapping[str, Any]) -> dict[str, int]:
        """Apply the policies' KSM host controls (``ksm_run``, ...).

        Other controls are ignored; unusable values are logged and skipped.
        Returns what was written (in a dry run: what would have been), by
        file name.
        """
        errors: dict[str, str] = {}
        self.last_errors = errors
        wanted: dict[str, int] = {}
        for control, value in controls.items():
            name = CONTROL_FILES.get(control)
            if name is None or value is None:
                continue
            try:
                wanted[name] = _check(name, value)
            except InvalidArgument as exc:
                log.warning("Ignoring policy control %s: %s", control, exc)
                errors[name] = str(exc)
        return await self._write_all(wanted, errors)

    async def set(self, settings: Mapping[str, Any]) -> dict[str, int]:
        """Apply settings by file name (``run``, ``pages_to_scan``, ...) on request.

        Every key and value is checked first: ``InvalidArgument`` on an
        unknown key or a bad value, and then nothing is written.  Returns
        what was written; failed writes are in ``last_errors``, as with
        ``apply``.
        """
        wanted = self._checked(settings)
        self.last_errors = {}
        return await self._write_all(wanted, self.last_errors)

    async def request(self, settings: Mapping[str, Any]) -> dict[str, int]:
        """``set`` for an administrator's request, sharing nothing with the policy's
        applies: ``last_errors`` stays theirs (an apply may run while a request
        waits for an unmerge).  Returns what was written; ``Failed`` when the
        kernel refused a write (the message says which; the settings before it
        were written).
        """
        if not isinstance(settings, Mapping):
            raise InvalidArgument("KSM settings must be a mapping of names to values")
        wanted = self._checked(settings)
        errors: dict[str, str] = {}
        written = await self._write_all(wanted, errors)
        if errors:
            done = (f" (written: {', '.join(f'{k}={v}' for k, v in written.items())})"
                    if written else "")
            raise Failed(f"KSM not set: {'; '.join(errors.values())}{done}")
        return written

    @staticmethod
    def _checked(settings: Mapping[str, Any]) -> dict[str, int]:
        unknown = sorted(set(settings) - set(WRITE_ORDER), key=repr)
        if unknown:
            raise InvalidArgument(
                f"unknown KSM setting(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(WRITE_ORDER)}")
        return {name: _check(name, value) for name, value in settings.items()}

    # -- writing ----------------------------------------------------------------

    def _read(self, errors: dict[str, str]) -> dict[str, int] | None:
        """The kernel's current values (host field names), None after logging a failure."""
        try:
            current = read_ksm(self.ksm_dir)
        except (OSError, ValueError) as exc:
            message = f"cannot read the KSM settings in {self.ksm_dir}: {exc}"
            # Logged once per failure, not at every evaluation of the policies.
            if message != self._read_failure:
                log.warning("%s; KSM settings are left alone", message)
            self._read_failure = message
            errors["read"] = message
            return None
        if self._read_failure is not None:
            log.info("KSM settings in %s are readable again", self.ksm_dir)
            self._read_failure = None
        return current

    async def _write_all(self, wanted: Mapping[str, int],
                         errors: dict[str, str]) -> dict[str, int]:
        if not wanted:
            return {}
        current = self._read(errors)
        if current is None:
            return {}
        written: dict[str, int] = {}
        for name in WRITE_ORDER:
            if name not in wanted:
                continue
            value = wanted[name]
            now = current.get(KSM_FILES[name])
            if now is None:
                message = (f"this kernel has no {self.ksm_dir / name} "
                           f"(not built with NUMA support)")
                log.warning("Cannot set KSM %s to %d: %s", name, value, message)
                errors[name] = message
                continue
            if now == value:
                continue
            if name == "merge_across_nodes":
                await self._set_merge(value, wanted.get("run"), current, written, errors)
            elif self._write(name, value, now, errors):
                current[KSM_FILES[name]] = value
                written[name] = value
        return written

    def _write(self, name: str, value: int, now: int | None,
               errors: dict[str, str]) -> bool:
        """Write one file; True when done (or, in a dry run, it would be)."""
        path = self.ksm_dir / name
        if self.dry_run:
            log.info("Dry run: would set KSM %s to %d (now %s)", name, value, now)
            return True
        try:
            _write_file(path, f"{value}\n")
        except OSError as exc:
            self._failed(name, value, exc, errors)
            return False
        log.info("Set KSM %s to %d (was %s)", name, value, now)
        return True

    def _failed(self, name: str, value: int, exc: OSError,
                errors: dict[str, str]) -> None:
        message = f"writing {value} to {self.ksm_dir / name} failed: {exc.strerror or exc}"
        log.error("Cannot set KSM %s: %s", name, message)
        errors[name] = message

    async def _set_merge(self, value: int, run_wanted: int | None,
                         current: dict[str, int], written: dict[str, int],
                         errors: dict[str, str]) -> None:
        """Change merge_across_nodes, unmerging first if the kernel is busy."""
        name = "merge_across_nodes"
        now = current[KSM_FILES[name]]
        shared = current.get("ksm_pages_shared", 0)
        if self.dry_run:
            if shared:
                log.info("Dry run: would set KSM %s to %d (now %d); %d pages are "
                         "shared, so all KSM pages would first be unmerged (run=2)",
                         name, value, now, shared)
            else:
                log.info("Dry run: would set KSM %s to %d (now %d)", name, value, now)
            written[name] = value
            return
        path = self.ksm_dir / name
        try:
            _write_file(path, f"{value}\n")
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                self._failed(name, value, exc, errors)
                return
        else:
            log.info("Set KSM %s to %d (was %d)", name, value, now)
            current[KSM_FILES[name]] = value
            written[name] = value
            return

        # EBUSY: pages are still shared.  Unmerge them all, then try again.
        run_before = current["ksm_run"]
        log.warning("Kernel refused KSM %s=%d while pages are shared (EBUSY); "
                    "unmerging all KSM pages (run=2) to change it", name, value)
        if not self._write("run", 2, run_before, errors):
            return
        current["ksm_run"] = 2
        written["run"] = 2
        try:
            if not await self._wait_unmerged():
                log.warning("KSM pages_shared did not reach 0 within %.1f s after "
                            "the unmerge; trying %s=%d anyway",
                            self.unmerge_timeout, name, value)
            try:
                _write_file(path, f"{value}\n")
            except OSError as exc:
                self._failed(name, value, exc, errors)
            else:
                log.info("Set KSM %s to %d (was %d) after unmerging", name, value, now)
                current[KSM_FILES[name]] = value
                written[name] = value
        finally:
            restore = run_before if run_wanted is None else run_wanted
            if restore != 2 and self._write("run", restore, 2, errors):
                current["ksm_run"] = restore
                written["run"] = restore

    async def _wait_unmerged(self) -> bool:
        """Wait (bounded) until pages_shared is 0; False on timeout or read failure."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.unmerge_timeout
        while True:
            try:
                shared = read_ksm(self.ksm_dir)["ksm_pages_shared"]
            except (OSError, ValueError) as exc:
                log.warning("Cannot read the KSM counters in %s while waiting for "
                            "the unmerge: %s", self.ksm_dir, exc)
                return False
            if shared == 0:
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(self.poll_interval)
