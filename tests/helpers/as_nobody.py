"""Running commands, and the project's own Python code, as user ``nobody``.

The bus and CLI tests run clients as an unprivileged user, so that the real
polkitd judges a real unprivileged caller.  ``run_as_nobody`` drops to
nobody (group nogroup, no supplementary groups) with ``setpriv`` (or
``runuser``) and starts in ``/``.

nobody cannot read a checkout under /root or in a ``mktemp -d`` folder (mode
0700), nor the virtualenv inside it: a client started with the tests' own
interpreter and ``PYTHONPATH=<checkout>`` finds neither ``momservice`` nor
``dbus_next`` there.  ``nobody_python()`` gives such clients, once per test
process:

* an interpreter nobody can run, of the same Python as the tests' (same
  bytecode tag and extension ABI, so the C extensions of the venv load):
  the venv's base interpreter, else the system's ``python3.X``, each tried
  by running it as nobody;
* a snapshot of the project's packages: ``momservice`` as the tests import
  it (through the editable install: the checkout itself) and the
  distributions it depends on (``pyproject.toml``, and theirs) as installed
  in the venv, copied file by file from their installed records into a
  root-owned directory under /tmp that nobody can read but not change.  It
  is made when first needed, so it is the code under test, and removed when
  the test process exits.

The interpreter runs with ``-S`` (no site-packages): it sees the snapshot and
the standard library only, so a package missing from the snapshot fails
loudly instead of being picked up from the host's dist-packages.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]

NOBODY = "nobody"

_NOBODY_BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/nonexistent",
    "PYTHONDONTWRITEBYTECODE": "1",
}


def privilege_dropper() -> list[str] | None:
    """The command prefix that runs a command as ``nobody``, or None."""
    try:
        user = pwd.getpwnam(NOBODY)
    except KeyError:
        return None
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                "--clear-groups", "--"]
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", NOBODY, "--"]
    return None


def nobody_command(argv: Sequence[str]) -> list[str]:
    """``argv`` prefixed so that it runs as ``nobody`` (for Popen)."""
    prefix = privilege_dropper()
    if prefix is None:
        raise FileNotFoundError("neither setpriv nor runuser is installed")
    return [*prefix, *argv]


def nobody_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A small environment for ``nobody`` (PATH, LANG, HOME) plus ``env``."""
    return {**_NOBODY_BASE_ENV, **(env or {})}


def run_as_nobody(argv: Sequence[str], env: Mapping[str, str] | None = None, *,
                  timeout: float = 30.0, cwd: str | Path = "/",
                  input: str | None = None, check: bool = False
                  ) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as user ``nobody`` (group nogroup, no supplementary groups).

    The environment is a small base (PATH, LANG, HOME=/nonexistent) updated
    with ``env``: pass ``bus.client_env()`` to talk to a private bus.  The
    process starts in ``cwd`` (``/``: nobody may not enter root's directory).
    Output is captured as text; the call is bounded by ``timeout``.
    """
    return subprocess.run(nobody_command(argv), env=nobody_env(env), cwd=cwd,
                          input=input, capture_output=True, text=True,
                          timeout=timeout, check=check)


# --------------------------------------------------------------------------
# A Python for nobody


@dataclass(frozen=True)
class NobodyPython:
    """An interpreter nobody can run, and the snapshot of packages it imports."""

    interpreter: str
    site: Path

    def argv(self, *args: str) -> list[str]:
        """The command line running ``args`` (``-c CODE``, ``-m MODULE``...)."""
        return [self.interpreter, "-S", *args]

    def env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """``env`` plus what makes the snapshot importable (for ``run_as_nobody``)."""
        return {**(env or {}), "PYTHONPATH": str(self.site)}


def python_as_nobody(code: str, env: Mapping[str, str] | None = None, *,
                     timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as nobody, with the project's packages importable."""
    python = nobody_python()
    return run_as_nobody(python.argv("-c", code), python.env(env), timeout=timeout)


_lock = threading.Lock()
_python: NobodyPython | None = None


def nobody_python() -> NobodyPython:
    """This test process's ``NobodyPython`` (made on first use)."""
    global _python
    with _lock:
        if _python is None:
            interpreter = _find_interpreter()
            site = _make_snapshot()
            _check_snapshot(interpreter, site)
            _python = NobodyPython(interpreter, site)
        return _python


# What nobody's interpreter must agree on with ours: bytecode tag and the ABI
# of extension modules (libvirtmod, systemd's _journal...).
_PROBE = ("import sys, sysconfig, asyncio, json; "
          "print(sys.implementation.cache_tag, sysconfig.get_config_var('SOABI'))")


def _find_interpreter() -> str:
    wanted = f"{sys.implementation.cache_tag} {sysconfig.get_config_var('SOABI')}"
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    path = _NOBODY_BASE_ENV["PATH"]
    candidates = [getattr(sys, "_base_executable", None), os.path.realpath(sys.executable),
                  shutil.which(version, path=path), shutil.which("python3", path=path)]
    tried: list[str] = []
    for candidate in dict.fromkeys(c for c in candidates if c):
        try:
            # Exec'd by a shell already running as nobody: setpriv execs its
            # command before it has dropped every capability, so it may start
            # a program on a path nobody could not reach itself.
            result = run_as_nobody(["/bin/sh", "-c", 'exec "$0" "$@"', candidate,
                                    "-S", "-c", _PROBE], timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            tried.append(f"{candidate}: {e}")
            continue
        if result.returncode == 0 and result.stdout.strip() == wanted:
            return candidate
        tried.append(f"{candidate}: exit {result.returncode}, {result.stdout.strip()!r} "
                     f"{result.stderr.strip()[-300:]!r}")
    raise RuntimeError(f"no Python interpreter that nobody can run is the tests' own "
                       f"({wanted}); tried:\n" + "\n".join(tried))


def _dependencies() -> Iterator[importlib.metadata.Distribution]:
    """The installed distributions momservice needs at run time, transitively."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pending = [Requirement(r) for r in project.get("dependencies", [])]
    seen: set[str] = set()
    while pending:
        requirement = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        dist = importlib.metadata.distribution(requirement.name)
        key = dist.metadata["Name"].lower()
        if key in seen:
            continue
        seen.add(key)
        yield dist
        pending.extend(Requirement(r) for r in dist.requires or [])


def _copy_file(source: Path, dest: Path) -> None:
    # The modes are set, not copied: a checkout made under umask 077 has
    # files nobody could not read even in the snapshot.
    dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    os.chmod(dest, 0o755 if os.access(source, os.X_OK) else 0o644)


def _make_snapshot() -> Path:
    site = Path(tempfile.mkdtemp(prefix="mom-nobody-python-", dir="/tmp"))
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # not in a forked child
            shutil.rmtree(site, ignore_errors=True)
    atexit.register(remove)
    os.chmod(site, 0o755)
    spec = importlib.util.find_spec("momservice")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("momservice is not importable by the tests")
    package = Path(list(spec.submodule_search_locations)[0])
    for source in package.rglob("*"):
        if source.is_file() and "__pycache__" not in source.parts:
            _copy_file(source, site / "momservice" / source.relative_to(package))
    for dist in _dependencies():
        if dist.files is None:
            raise RuntimeError(f"{dist.metadata['Name']} has no record of its files")
        for file in dist.files:
            # Console scripts lie outside site-packages ("../../../bin/...").
            if ".." in file.parts or "__pycache__" in file.parts:
                continue
            _copy_file(Path(dist.locate_file(file)), site / file)
    return site


def _check_snapshot(interpreter: str, site: Path) -> None:
    """nobody imports momservice from the snapshot, or say why not now."""
    python = NobodyPython(interpreter, site)
    result = run_as_nobody(python.argv("-c", "import momservice; print(momservice.__file__)"),
                           python.env(), timeout=60)
    where = result.stdout.strip()
    if result.returncode != 0 or not where.startswith(f"{site}/"):
        raise RuntimeError(f"nobody's Python ({interpreter}) does not import momservice from "
                           f"{site}: exit {result.returncode}, {where!r}, {result.stderr}")
