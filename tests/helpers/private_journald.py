"""A real systemd-journald of the test's own, in a private mount namespace.

libsystemd (and so python-systemd's JournalHandler) always sends to
/run/systemd/journal/socket.  journald runs here in a mount namespace of its
own where /run is a directory of the test, so it listens on a socket there,
keeps its journal in memory mode under that directory (``Storage=volatile``)
and never sees the machine's /run; the clients join that namespace with
``nsenter``.  Nothing of the machine changes, and when journald exits the
namespace and its mount go with it.  ``journalctl -D`` reads the journal
files from outside.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers.private_bus import _terminate

JOURNALD_CANDIDATES = ("/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald")

# Later than any Debian drop-in: these settings win.  No kernel messages,
# no forwarding (there is nothing to forward to), no rate limit (a test
# logging fast must not lose entries).
CONFIG = """\
[Journal]
Storage=volatile
ReadKMsg=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
RateLimitIntervalSec=0
"""


def find_journald() -> str | None:
    """The systemd-journald binary, None when systemd is not installed."""
    return next((p for p in JOURNALD_CANDIDATES if os.access(p, os.X_OK)), None)


def unavailable_reason() -> str | None:
    """Why a private journald cannot run here, None when it can."""
    if os.geteuid() != 0:
        return "a private journald needs root (a mount namespace)"
    if find_journald() is None:
        return "systemd-journald is not installed"
    for tool in ("unshare", "nsenter", "journalctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


class PrivateJournald:
    """systemd-journald listening in ``root``/run, for as long as the test wants.

    ``command(argv)`` wraps a command so that it runs in journald's mount
    namespace (where /run/systemd/journal/socket is this journald's);
    ``entries(*matches)`` reads what it stored, as ``journalctl -o json``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.run_dir = root / "run"
        self.log = root / "journald.log"
        self.process: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.run_dir / "systemd" / "journal" / "socket"

    def start(self, timeout: float = 30.0) -> None:
        journald = find_journald()
        assert journald is not None, "systemd-journald is not installed"
        conf_dir = self.run_dir / "systemd" / "journald.conf.d"
        conf_dir.mkdir(parents=True)
        (conf_dir / "zz-private-journald.conf").write_text(CONFIG)
        with open(self.log, "ab") as log:
            # unshare and sh exec in turn: the process is journald itself.
            self.process = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--",
                 "sh", "-c", 'mount --bind "$1" /run && exec "$2"', "sh",
                 str(self.run_dir), journald],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.socket.is_socket():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"journald did not start:\n{self.log_text()}")
            time.sleep(0.05)

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run in journald's mount namespace."""
        assert self.process is not None and self.process.poll() is None
        return ["nsenter", f"--mount=/proc/{self.process.pid}/ns/mnt", "--", *argv]

    def entries(self, *matches: str) -> list[dict[str, str]]:
        """The stored entries matching ``matches`` (``FIELD=value``), oldest first."""
        directory = self.run_dir / "log" / "journal"
        if not directory.exists():
            return []   # nothing written yet
        out = subprocess.run(
            ["journalctl", "--no-pager", "-o", "json", "-D", str(directory), *matches],
            capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise AssertionError(f"journalctl failed ({out.returncode}): {out.stderr}")
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def wait_for(self, *matches: str,
                 until: Callable[[list[dict[str, str]]], bool] = bool,
                 timeout: float = 60.0) -> list[dict[str, str]]:
        """Wait until the entries matching ``matches`` satisfy ``until``
        (by default: there is one); returns them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.entries(*matches)
            if found and until(found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no journal entries {' '.join(matches)} as expected "
                                     f"within {timeout:.0f} s; journald says:\n"
                                     f"{self.log_text()}")
            time.sleep(0.2)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """Stop journald (it syncs its files first); its namespace goes with it."""
        if self.process is not None:
            _terminate(self.process, 30)
            self.process = None
