"""Tests of KsmController, first on a temporary copy of /sys/kernel/mm/ksm, then on the real one.

The temporary directory holds the same files as the kernel's, so the
controller reads it with the collector's reader and writes it as it would
sysfs.  The real-sysfs tests run only as root on a kernel with KSM; they
save every setting first and put it back afterwards.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import momservice.controllers.ksm as ksm_module
from tests.helpers.ksm_sysfs import (LOCK, LOCK_WAIT, REAL, KsmBusy, exclusive_real_ksm, real_value,
                                     saved_real_ksm)
from momservice.collectors.ksm import KSM_TUNABLES
from momservice.controllers import KsmController

LOGGER = "momservice.controllers.ksm"
OLD = 1_000_000_000  # an mtime far in the past: files written since are newer

KERNEL_FILES = {"run": "0", "pages_to_scan": "100", "sleep_millisecs": "20",
                "merge_across_nodes": "1", "pages_shared": "0",
                "pages_sharing": "0", "pages_unshared": "0",
                "pages_volatile": "0", "full_scans": "3",
                "advisor_mode": "[none] scan-time", "use_zero_pages": "0"}
TUNABLES = KSM_TUNABLES
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ksm_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ksm"
    d.mkdir()
    for name, text in KERNEL_FILES.items():
        (d / name).write_text(text + "\n")
        os.utime(d / name, (OLD, OLD))
    return d


def values(d: Path) -> dict[str, int]:
    return {name: int((d / name).read_text()) for name in TUNABLES if (d / name).exists()}


def touched(d: Path) -> set[str]:
    """Files written since the fixture made them (root ignores read-only modes,
    so modification times are what shows a write)."""
    return {p.name for p in d.iterdir() if p.stat().st_mtime != OLD}


def run(coro):
    return asyncio.run(coro)


# -- temporary directory ----------------------------------------------------


def test_writes_only_the_values_that_differ(ksm_dir, caplog):
    ctl = KsmController(ksm_dir)
    with caplog.at_level(logging.INFO, LOGGER):
        written = run(ctl.apply({"ksm_run": 1, "ksm_pages_to_scan": 100,
                                 "ksm_sleep_millisecs": 50,
                                 "ksm_merge_across_nodes": 1}))
    assert written == {"run": 1, "sleep_millisecs": 50}
    assert touched(ksm_dir) == {"run", "sleep_millisecs"}
    assert values(ksm_dir) == {"run": 1, "pages_to_scan": 100,
                               "sleep_millisecs": 50, "merge_across_nodes": 1}
    # One INFO line per applied change.
    assert sorted(r.getMessage() for r in caplog.records) == [
        "Set KSM run to 1 (was 0)", "Set KSM sleep_millisecs to 50 (was 20)"]
    assert ctl.last_errors == {}


def test_a_shorter_value_replaces_a_longer_one_whole(ksm_dir):
    # sysfs takes each write as the whole value; a regular file (a test's or
    # the simulator's KSM directory) must too, or "64" over "100" reads "64\n0".
    ctl = KsmController(ksm_dir)
    run(ctl.apply({"ksm_pages_to_scan": 64}))
    assert (ksm_dir / "pages_to_scan").read_text() == "64\n"


def test_reads_the_kernel_each_time_instead_of_trusting_a_cache(ksm_dir):
    ctl = KsmController(ksm_dir)
    assert run(ctl.apply({"ksm_run": 1})) == {"run": 1}
    assert run(ctl.apply({"ksm_run": 1})) == {}
    (ksm_dir / "run").write_text("0\n")  # another tool stops ksmd
    assert run(ctl.apply({"ksm_run": 1})) == {"run": 1}
    assert values(ksm_dir)["run"] == 1


def test_policy_floats_are_rounded_down(ksm_dir):
    ctl = KsmController(ksm_dir)
    written = run(ctl.apply({"ksm_pages_to_scan": 300.9, "ksm_sleep_millisecs": 20.99,
                             "ksm_run": 1.0}))
    # sleep_millisecs rounds down to the current 20: not written.
    assert written == {"pages_to_scan": 300, "run": 1}
    assert (ksm_dir / "pages_to_scan").read_text() == "300\n"
    assert "sleep_millisecs" not in touched(ksm_dir)


@pytest.mark.parametrize("control, bad", [
    ("ksm_run", 3), ("ksm_run", -1), ("ksm_run", 1.5), ("ksm_run", "1"),
    ("ksm_pages_to_scan", -1), ("ksm_pages_to_scan", float("nan")),
    ("ksm_pages_to_scan", 2**32), ("ksm_sleep_millisecs", "fast"),
    ("ksm_sleep_millisecs", True), ("ksm_merge_across_nodes", 2),
])
def test_invalid_policy_values_are_logged_and_skipped(ksm_dir, caplog, control, bad):
    ctl = KsmController(ksm_dir)
    other = "ksm_sleep_millisecs" if control != "ksm_sleep_millisecs" else "ksm_pages_to_scan"
    with caplog.at_level(logging.WARNING, LOGGER):
        written = run(ctl.apply({control: bad, other: 77}))
    name = ksm_module.CONTROL_FILES[control]
    assert written == {ksm_module.CONTROL_FILES[other]: 77}
    assert touched(ksm_dir) == {ksm_module.CONTROL_FILES[other]}
    assert list(ctl.last_errors) == [name]
    [record] = caplog.records
    assert control in record.getMessage() and repr(bad) in record.getMessage()


def test_nil_and_foreign_controls_are_ignored(ksm_dir):
    ctl = KsmController(ksm_dir)
    assert run(ctl.apply({"ksm_run": None, "something_else": 5})) == {}
    assert touched(ksm_dir) == set()
    assert ctl.last_errors == {}


def test_dry_run_decides_and_logs_but_writes_nothing(ksm_dir, caplog):
    ctl = KsmController(ksm_dir, dry_run=True)
    with caplog.at_level(logging.INFO, LOGGER):
        written = run(ctl.apply({"ksm_run": 1, "ksm_pages_to_scan": 100,
                                 "ksm_sleep_millisecs": 10,
                                 "ksm_merge_across_nodes": 0}))
    assert written == {"run": 1, "sleep_millisecs": 10, "merge_across_nodes": 0}
    assert touched(ksm_dir) == set()
    assert values(ksm_dir) == {"run": 0, "pages_to_scan": 100,
                               "sleep_millisecs": 20, "merge_across_nodes": 1}
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3 and all(m.startswith("Dry run: would set KSM") for m in messages)


def test_dry_run_mentions_the_unmerge_a_merge_change_would_need(ksm_dir, caplog):
    (ksm_dir / "pages_shared").write_text("42\n")
    with caplog.at_level(logging.INFO, LOGGER):
        written = run(KsmController(ksm_dir, dry_run=True).apply({"ksm_merge_across_nodes": 0}))
    assert written == {"merge_across_nodes": 0}
    assert values(ksm_dir)["merge_across_nodes"] == 1
    assert "42 pages are shared" in caplog.records[0].getMessage()


READ_ONLY_INT = Path("/proc/sys/kernel/ngroups_max")


def test_other_write_errors_are_logged_and_reported_not_raised(ksm_dir, caplog):
    # A file that reads as a number but refuses writes even from root: a
    # read-only sysctl (EACCES; EROFS where /proc/sys is mounted read-only).
    if not READ_ONLY_INT.is_file():
        pytest.skip(f"{READ_ONLY_INT} is absent")
    (ksm_dir / "sleep_millisecs").unlink()
    (ksm_dir / "sleep_millisecs").symlink_to(READ_ONLY_INT)
    wanted = int(READ_ONLY_INT.read_text()) + 1
    ctl = KsmController(ksm_dir)
    with caplog.at_level(logging.INFO, LOGGER):
        written = run(ctl.apply({"ksm_sleep_millisecs": wanted, "ksm_run": 1}))
    assert written == {"run": 1}
    assert values(ksm_dir)["run"] == 1
    assert list(ctl.last_errors) == ["sleep_millisecs"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert str(ksm_dir / "sleep_millisecs") in errors[0].getMessage()
    assert str(wanted) in errors[0].getMessage()


def test_unreadable_ksm_dir_is_logged_once_and_reported(tmp_path, caplog):
    ctl = KsmController(tmp_path / "no-ksm-here")
    with caplog.at_level(logging.WARNING, LOGGER):
        assert run(ctl.apply({"ksm_run": 1})) == {}
        assert run(ctl.apply({"ksm_run": 1})) == {}
    assert "read" in ctl.last_errors
    assert len(caplog.records) == 1
    assert "no-ksm-here" in caplog.records[0].getMessage()


def test_kernel_without_merge_across_nodes(ksm_dir, caplog):
    (ksm_dir / "merge_across_nodes").unlink()
    ctl = KsmController(ksm_dir)
    with caplog.at_level(logging.WARNING, LOGGER):
        written = run(ctl.apply({"ksm_merge_across_nodes": 0, "ksm_run": 1}))
    assert written == {"run": 1}
    assert "merge_across_nodes" in ctl.last_errors
    assert not (ksm_dir / "merge_across_nodes").exists()
    assert "NUMA" in caplog.records[0].getMessage()


# -- set (the later D-Bus SetKsm) ------------------------------------------------


def test_set_writes_by_file_name(ksm_dir):
    ctl = KsmController(ksm_dir)
    assert run(ctl.set({"run": 1, "pages_to_scan": 100, "sleep_millisecs": 5})) == \
        {"run": 1, "sleep_millisecs": 5}
    assert values(ksm_dir)["sleep_millisecs"] == 5


@pytest.mark.parametrize("settings, message", [
    ({"run": 1, "ksm_run": 1}, "unknown KSM setting.*'ksm_run'"),
    ({"pages_to_scan": 10, "full_scans": 0}, "unknown KSM setting.*'full_scans'"),
    ({"run": 1, "sleep_millisecs": -3}, "sleep_millisecs must be a non-negative integer"),
    ({"pages_to_scan": 10, "run": 7}, "run must be one of 0, 1, 2"),
    ({"merge_across_nodes": None}, "merge_across_nodes must be one of 0, 1"),
])
def test_set_refuses_bad_keys_and_values_before_writing_anything(ksm_dir, settings, message):
    with pytest.raises(ValueError, match=message):
        run(KsmController(ksm_dir).set(settings))
    assert touched(ksm_dir) == set()


# -- EBUSY on merge_across_nodes ------------------------------------------------


class FakeKernelWrites:
    """Stands in for the controller's write(2) on the temporary directory.

    A plain file cannot answer EBUSY the way sysfs does when
    merge_across_nodes changes while pages are shared, so this one path
    needs a stand-in: it refuses such a write with EBUSY, and makes
    run=2 drop pages_shared to 0 a little later, as ksmd's unmerge does.
    """

    def __init__(self, d: Path, unmerge_works: bool = True, delay: float = 0.15) -> None:
        self.d = d
        self.unmerge_works = unmerge_works
        self.delay = delay
        self.writes: list[tuple[str, int, str]] = []

    def __call__(self, path: Path, text: str) -> None:
        name, value = path.name, int(text)
        if (name == "merge_across_nodes" and int((self.d / name).read_text()) != value
                and int((self.d / "pages_shared").read_text()) != 0):
            self.writes.append((name, value, "EBUSY"))
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        self.writes.append((name, value, "ok"))
        path.write_text(text)
        if name == "run" and value == 2 and self.unmerge_works:
            asyncio.get_running_loop().call_later(
                self.delay, (self.d / "pages_shared").write_text, "0\n")


@pytest.fixture
def busy_ksm(ksm_dir, monkeypatch):
    (ksm_dir / "run").write_text("1\n")
    (ksm_dir / "pages_shared").write_text("500\n")
    fake = FakeKernelWrites(ksm_dir)
    monkeypatch.setattr(ksm_module, "_write_file", fake)
    return ksm_dir, fake


def test_ebusy_is_retried_after_an_unmerge_and_run_restored(busy_ksm, caplog):
    d, fake = busy_ksm
    ctl = KsmController(d, poll_interval=0.02)
    start = time.monotonic()
    with caplog.at_level(logging.INFO, LOGGER):
        written = run(ctl.apply({"ksm_merge_across_nodes": 0}))
    assert time.monotonic() - start >= fake.delay  # it did wait for the unmerge
    assert fake.writes == [("merge_across_nodes", 0, "EBUSY"), ("run", 2, "ok"),
                           ("merge_across_nodes", 0, "ok"), ("run", 1, "ok")]
    assert written == {"merge_across_nodes": 0, "run": 1}
    assert values(d) == {"run": 1, "pages_to_scan": 100, "sleep_millisecs": 20,
                         "merge_across_nodes": 0}
    assert ctl.last_errors == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "EBUSY" in warnings[0]


def test_ebusy_unmerge_then_the_requested_run_value(busy_ksm):
    d, fake = busy_ksm
    ctl = KsmController(d, poll_interval=0.02)
    written = run(ctl.apply({"ksm_run": 0, "ksm_merge_across_nodes": 0}))
    assert fake.writes == [("merge_across_nodes", 0, "EBUSY"), ("run", 2, "ok"),
                           ("merge_across_nodes", 0, "ok"), ("run", 0, "ok")]
    assert written == {"merge_across_nodes": 0, "run": 0}
    assert values(d)["run"] == 0 and values(d)["merge_across_nodes"] == 0


def test_ebusy_with_an_unmerge_that_never_finishes_is_bounded_and_not_fatal(busy_ksm, caplog):
    d, fake = busy_ksm
    fake.unmerge_works = False
    ctl = KsmController(d, unmerge_timeout=0.3, poll_interval=0.02)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, LOGGER):
        written = run(ctl.apply({"ksm_merge_across_nodes": 0}))
    assert 0.3 <= time.monotonic() - start < 5
    assert fake.writes == [("merge_across_nodes", 0, "EBUSY"), ("run", 2, "ok"),
                           ("merge_across_nodes", 0, "EBUSY"), ("run", 1, "ok")]
    assert values(d)["merge_across_nodes"] == 1 and values(d)["run"] == 1
    assert written == {"run": 1}
    assert "merge_across_nodes" in ctl.last_errors
    assert any(r.levelno == logging.ERROR and "merge_across_nodes" in r.getMessage()
               for r in caplog.records)


# -- the real /sys/kernel/mm/ksm ---------------------------------------------------

def _write_real(name: str, value: str) -> None:
    ksm_module._write_file(REAL / name, f"{value}\n")




@pytest.fixture
def real_ksm():
    with saved_real_ksm() as saved:
        yield saved


_TAKE_TURN = """
from tests.helpers import ksm_sysfs
try:
    with ksm_sysfs.exclusive_real_ksm(timeout=float(__import__("sys").argv[1])):
        print("held")
except ksm_sysfs.KsmBusy as e:
    print("busy:", e)
"""


def _take_turn(wait: float) -> str:
    result = subprocess.run([sys.executable, "-c", _TAKE_TURN, str(wait)], cwd=REPO,
                            capture_output=True, text=True, timeout=wait + 60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_test_processes_take_turns_with_the_real_ksm():
    """While one test process holds the real KSM, another waits for it and,
    given up, is told who holds it; then it gets its turn."""
    if os.geteuid() != 0:
        pytest.skip(f"only root changes the real KSM (the lock is {LOCK})")
    try:
        with exclusive_real_ksm():
            with exclusive_real_ksm():  # re-entrant within one process
                busy = _take_turn(0.5)
            again = _take_turn(0.5)
    except KsmBusy as e:
        pytest.skip(str(e))
    for answer in (busy, again):
        assert answer.startswith("busy: the real KSM was in use by another test process "
                                 f"for 0 s (pid {os.getpid()}: "), answer
    # Free again (other test runs may take it meanwhile: it waits as they would).
    assert _take_turn(LOCK_WAIT) == "held"


def test_real_writes_only_what_differs(real_ksm, monkeypatch):
    calls = []
    real_write = ksm_module._write_file

    def spy(path, text):
        calls.append((path.name, text))
        real_write(path, text)

    monkeypatch.setattr(ksm_module, "_write_file", spy)
    ctl = KsmController()
    same = {"ksm_" + n: int(v) for n, v in real_ksm.items()}
    assert run(ctl.apply(same)) == {}
    assert calls == []
    target = real_value("pages_to_scan") + 7
    assert run(ctl.apply({**same, "ksm_pages_to_scan": target})) == {"pages_to_scan": target}
    assert calls == [("pages_to_scan", f"{target}\n")]
    assert ctl.last_errors == {}


def test_real_run_1_then_0(real_ksm):
    ctl = KsmController()
    run(ctl.apply({"ksm_run": 1}))
    assert real_value("run") == 1
    assert run(ctl.apply({"ksm_run": 0})) == {"run": 0}
    assert real_value("run") == 0
    assert ctl.last_errors == {}


def test_real_scan_rate_changes_read_back(real_ksm):
    ctl = KsmController()
    pages = real_value("pages_to_scan") + 11
    sleep = real_value("sleep_millisecs") + 13
    written = run(ctl.apply({"ksm_pages_to_scan": pages + 0.8, "ksm_sleep_millisecs": sleep}))
    assert written == {"pages_to_scan": pages, "sleep_millisecs": sleep}
    assert real_value("pages_to_scan") == pages
    assert real_value("sleep_millisecs") == sleep
    assert ctl.last_errors == {}


def test_real_merge_across_nodes_change(real_ksm):
    if "merge_across_nodes" not in real_ksm:
        pytest.skip("this kernel has no merge_across_nodes (no NUMA support)")
    ctl = KsmController()
    flipped = 1 - int(real_ksm["merge_across_nodes"])
    written = run(ctl.apply({"ksm_run": 0, "ksm_merge_across_nodes": flipped}))
    assert written.get("merge_across_nodes") == flipped
    assert real_value("merge_across_nodes") == flipped
    assert real_value("run") == 0
    assert ctl.last_errors == {}


@pytest.mark.timeout(120)
def test_real_merge_across_nodes_change_while_pages_are_shared(real_ksm, caplog):
    """Provoke real sharing (identical pages marked MADV_MERGEABLE, ksmd at
    full speed), so that the kernel itself answers EBUSY."""
    if "merge_across_nodes" not in real_ksm:
        pytest.skip("this kernel has no merge_across_nodes (no NUMA support)")
    page = mmap.PAGESIZE
    area = mmap.mmap(-1, 512 * page, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        for i in range(512):
            area[i * page:(i + 1) * page] = b"\x5a" * page
        area.madvise(mmap.MADV_MERGEABLE)
        ctl = KsmController()
        run(ctl.apply({"ksm_run": 1, "ksm_pages_to_scan": 5000, "ksm_sleep_millisecs": 1}))
        deadline = time.monotonic() + 30
        while real_value("pages_shared") == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        if real_value("pages_shared") == 0:
            pytest.skip("ksmd shared no page within 30 s; the EBUSY path is "
                        "covered on the temporary directory")
        flipped = 1 - int(real_ksm["merge_across_nodes"])
        with caplog.at_level(logging.INFO, LOGGER):
            written = run(ctl.apply({"ksm_run": 1, "ksm_merge_across_nodes": flipped}))
        # The kernel refused first; the controller unmerged (run=2) and retried.
        assert any("EBUSY" in r.getMessage() for r in caplog.records)
        assert "Set KSM run to 2 (was 1)" in caplog.messages
        assert written == {"merge_across_nodes": flipped, "run": 1}
        assert real_value("merge_across_nodes") == flipped
        assert real_value("run") == 1
        assert ctl.last_errors == {}
    finally:
        area.close()
