"""Prometheus' own ``promtool``, to check the metrics file momd writes.

Debian's ``prometheus`` package ships it, but installing that package would
enable and start a Prometheus server on the machine.  So the package is
only downloaded (``apt-get download``) and unpacked (``dpkg-deb -x``) into
the test cache (``$MOM_TEST_CACHE`` or ``~/.cache/mom-tests``, shared with
the guest image), once per package version; concurrent test processes take
turns through the cache's lock.  ``find_promtool`` returns the binary, or
raises :class:`PromtoolUnavailable` saying why it cannot be had.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.helpers.guest_image import GuestImageError, cache_dir, cache_lock, unpack_package

PACKAGE = "prometheus"


class PromtoolUnavailable(RuntimeError):
    """promtool could not be fetched: the message is the reason to skip with."""


def _run(argv: list[str], timeout: float = 300.0, **kwargs) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PromtoolUnavailable(f"{' '.join(argv)}: {e}") from None
    if result.returncode != 0:
        raise PromtoolUnavailable(f"{' '.join(argv)} failed ({result.returncode}): "
                                  f"{result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def _candidate_version() -> str:
    try:
        show = _run(["apt-cache", "show", "--no-all-versions", PACKAGE], timeout=60)
    except PromtoolUnavailable:
        if os.geteuid() != 0:
            raise
        # A fresh machine whose package lists were never downloaded.
        _run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "update", "-q"], timeout=900)
        show = _run(["apt-cache", "show", "--no-all-versions", PACKAGE], timeout=60)
    version = re.search(r"^Version:\s*(\S+)", show, re.M)
    if version is None:
        raise PromtoolUnavailable(f"apt-cache knows no version of {PACKAGE}")
    return version.group(1)


def find_promtool(cache: Path | None = None) -> Path:
    """The path of promtool from Debian's prometheus package, fetched if needed."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise PromtoolUnavailable("not a Debian system: no apt-get/dpkg-deb to fetch "
                                  "the prometheus package with")
    cache = Path(cache) if cache is not None else cache_dir()
    version = _candidate_version()
    final = cache / f"prometheus-{re.sub(r'[^A-Za-z0-9.+_-]', '_', version)}"
    binary = final / "usr" / "bin" / "promtool"
    if (final / "complete").exists():
        return binary
    with cache_lock(cache):
        if (final / "complete").exists():
            return binary  # another process fetched it while we waited
        with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
            work = Path(tmp)
            os.chmod(work, 0o755)  # apt's sandbox user writes the download here
            try:
                unpacked = unpack_package(PACKAGE, version, work)
            except GuestImageError as e:
                raise PromtoolUnavailable(str(e)) from None
            if not (unpacked / "usr" / "bin" / "promtool").is_file():
                raise PromtoolUnavailable(f"{PACKAGE} {version} holds no usr/bin/promtool")
            # promtool alone: the server and the web assets are most of the package.
            staging = work / "out"
            (staging / "usr" / "bin").mkdir(parents=True)
            shutil.copy2(unpacked / "usr" / "bin" / "promtool", staging / "usr" / "bin")
            (staging / "complete").write_text(f"{PACKAGE} {version}\n")
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
    return binary


def check_metrics(promtool: Path, text: str) -> subprocess.CompletedProcess:
    """``promtool check metrics`` over ``text`` (its standard input)."""
    return subprocess.run([str(promtool), "check", "metrics"], input=text,
                          capture_output=True, text=True, timeout=60)
