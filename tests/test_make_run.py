"""`make run`, the README's main command: the simulated host, end to end.

Runs the real target for 20 seconds (RUN_SECONDS): a private bus, momd on
sim://, momctl monitor in the foreground.  Its output must show balloons
moving, and nothing may be left running or on disk afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _demo_processes(under: Path) -> list[str]:
    """Processes of a demo whose temporary folder is in ``under`` (this test's
    own TMPDIR: other runs on a shared machine have demos of their own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if f"{under}/mom-demo-" in cmdline:
                found.append(cmdline)
    return found


@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("dbus-daemon") is None, reason="dbus-daemon is not installed")
def test_make_run_shows_balloons_moving_and_cleans_up(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    result = subprocess.run(["make", "--no-print-directory", "run"], cwd=REPO,
                            env=dict(os.environ, RUN_SECONDS="20", TMPDIR=str(tmp)),
                            capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "momd is managing sim://" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("sim-guest-")]
    assert rows, out[-3000:]
    # The TARGET column (last) shows a size once momd has moved a balloon.
    targets = [row[-2:] for row in rows if row[-1] != "-"]
    assert targets, "no balloon change in the monitor's output:\n" + out[-3000:]
    assert all(re.fullmatch(r"[0-9.]+", size) and unit in ("KiB", "MiB", "GiB")
               for size, unit in targets)
    assert _demo_processes(tmp) == []
    assert list(tmp.iterdir()) == []
