"""Readers for per-process files under ``/proc/PID``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

# include/linux/sched.h: set in the flags of every kernel thread.  Checked
# so that a user process that renamed itself "ksmd" is not mistaken for it.
PF_KTHREAD = 0x00200000

#: Prefix of the process names of QEMU (qemu-kvm, qemu-system-x86_64, whose
#: comm the kernel truncates to 15 characters: "qemu-system-x86").
QEMU_COMM_PREFIX = "qemu"


@dataclass(frozen=True)
class PidStat:
    """The fields of ``/proc/PID/stat`` the collectors use."""

    pid: int
    comm: str
    flags: int
    utime: int
    stime: int


def parse_pid_stat(text: str) -> PidStat:
    """Parse ``/proc/PID/stat``.

    The command name sits in parentheses and may itself hold spaces and
    parentheses, so it runs to the *last* ``)``; the numeric fields follow.
    Raises ``ValueError`` on malformed text.
    """
    open_paren = text.find("(")
    close_paren = text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        raise ValueError("no command name in stat line")
    pid = int(text[:open_paren])
    comm = text[open_paren + 1:close_paren]
    # rest[0] is field 3 (state), so field N of proc(5) is rest[N - 3].
    rest = text[close_paren + 1:].split()
    if len(rest) < 13:
        raise ValueError("stat line too short")
    return PidStat(pid=pid, comm=comm, flags=int(rest[6]),
                   utime=int(rest[11]), stime=int(rest[12]))


def parse_status_rss(text: str) -> int | None:
    """Return ``VmRSS`` (kB) from ``/proc/PID/status``.

    ``None`` for kernel threads and zombies, which have no such line.
    """
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def iter_pids(proc_root: Path) -> Iterator[int]:
    """Yield the pids of the processes (thread-group leaders) in /proc."""
    try:
        entries = list(proc_root.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name.isdigit():
            yield int(entry.name)


def read_comm(proc_root: Path, pid: int) -> str | None:
    """Return the command name of ``pid``, ``None`` if it is gone."""
    try:
        return (proc_root / str(pid) / "comm").read_text().rstrip("\n")
    except OSError:
        return None


def find_kernel_thread(proc_root: Path, name: str) -> int | None:
    """Return the pid of the kernel thread called ``name``, if any."""
    for pid in iter_pids(proc_root):
        if read_comm(proc_root, pid) != name:
            continue
        try:
            stat = parse_pid_stat((proc_root / str(pid) / "stat").read_text())
        except (OSError, ValueError):
            continue
        if stat.flags & PF_KTHREAD:
            return pid
    return None


def find_qemu_pids(proc_root: Path) -> list[int]:
    """Return the pids of running processes whose name starts with qemu.

    Matches on ``comm``, which every user may read, unlike the ``exe``
    link, which needs ptrace rights on the process.
    """
    pids = []
    for pid in iter_pids(proc_root):
        comm = read_comm(proc_root, pid)
        if comm is not None and comm.startswith(QEMU_COMM_PREFIX):
            pids.append(pid)
    return pids


def sum_rss(proc_root: Path, pids: Iterable[int]) -> int:
    """Sum ``VmRSS`` (KiB) of ``pids``.

    A process that exited meanwhile, or has no resident memory (zombie),
    counts as 0: guests come and go between listing and reading.
    """
    total = 0
    for pid in set(pids):
        try:
            text = (proc_root / str(pid) / "status").read_text()
        except OSError:
            continue
        try:
            rss = parse_status_rss(text)
        except (ValueError, IndexError):
            continue
        if rss is not None:
            total += rss
    return total
