"""The simulated KSM as a directory laid out like /sys/kernel/mm/ksm.

The real ``KsmController`` (and ``Service.set_ksm`` behind momctl) writes
the tunables here, unchanged; ``pull`` hands what it wrote to the
simulation, ``push`` writes the simulation's tunables and counters back.
The simulator pulls before each step and before each host sample and
pushes after, so the files are never more than one step behind.

What a regular file cannot do like sysfs: refuse a write.  A value the
kernel would refuse (a bad number, merge_across_nodes while pages are
shared) is taken back at the next ``pull``: the file shows the kernel's
value again, and a warning is logged.  And since the controller writes
without truncating, a shorter value written over a longer one leaves the
tail behind ("64" over "100" reads "64\\n0") until the next ``push``
rewrites the file; ``pull`` reads only the first number.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from ..collectors.ksm import KSM_TUNABLES
from .ksm_model import KsmModel

log = logging.getLogger(__name__)

_UINT_MAX = 2**32 - 1


class SimKsmDir:
    """KSM's sysfs files for a KsmModel, in ``path`` (a new temporary directory by default)."""

    def __init__(self, ksm: KsmModel, path: Path | None = None) -> None:
        self.ksm = ksm
        self._owned = path is None
        self.path = Path(tempfile.mkdtemp(prefix="mom-sim-ksm-")) if path is None \
            else Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._written: dict[str, str] = {}
        self.push()

    def pull(self) -> None:
        """Hand the tunables written since the last push to the simulation."""
        for name in KSM_TUNABLES:
            try:
                text = (self.path / name).read_text()
            except OSError as e:
                log.warning("simulated KSM: cannot read %s (%s); restoring it",
                            self.path / name, e)
                self._written.pop(name, None)
                continue
            if text == self._written.get(name):
                continue   # unchanged since we wrote it
            self._written.pop(name, None)  # rewritten at the next push, whatever happens
            value = _first_number(text)
            if value is None:
                log.warning("simulated KSM: %s holds %r, not a number; the kernel "
                            "would have refused it", name, text)
                continue
            self._apply(name, value)

    def _apply(self, name: str, value: int) -> None:
        ksm = self.ksm
        if name == "run":
            if value in (0, 1, 2):
                ksm.set_run(value)
                return
        elif name == "merge_across_nodes":
            if value in (0, 1):
                if not ksm.set_merge_across_nodes(value):
                    log.warning("simulated KSM: merge_across_nodes=%d refused while "
                                "%d pages are shared (the kernel says EBUSY)",
                                value, ksm.pages_shared)
                return
        elif 0 <= value <= _UINT_MAX:
            setattr(ksm, name, value)
            return
        log.warning("simulated KSM: %s=%d is out of range; the kernel would have "
                    "refused it", name, value)

    def push(self) -> None:
        """Write every tunable and counter of the simulation to its file."""
        for name, value in self.ksm.files().items():
            text = f"{value}\n"
            if self._written.get(name) == text:
                continue
            (self.path / name).write_text(text)
            self._written[name] = text

    def sync(self) -> None:
        """``pull`` then ``push``: the files and the simulation agree."""
        self.pull()
        self.push()

    def close(self) -> None:
        """Remove the directory if this object made it."""
        if self._owned:
            shutil.rmtree(self.path, ignore_errors=True)


def _first_number(text: str) -> int | None:
    words = text.split()
    if not words:
        return None
    try:
        return int(words[0])
    except ValueError:
        return None
