"""Cockpit's own web server with our page, and Debian's Chromium, for browser tests.

``CockpitWs`` runs Debian's ``cockpit-ws --local-session=cockpit-bridge`` on
a free port of 127.0.0.1: every browser connection gets a bridge running as
the user cockpit-ws runs as (root, or ``nobody`` for a session without
administrative access), with ``DBUS_SYSTEM_BUS_ADDRESS`` pointing at the
test's private system bus and ``XDG_DATA_DIRS`` at a staged copy of
``cockpit/`` (installed as ``<dir>/cockpit/mom``, where ``make install``
puts it under ``$(DATADIR)``), followed by /usr/share for Cockpit's own
``base1/cockpit.js``.  No login is needed in this mode.

``chromium_path()`` is Debian's /usr/bin/chromium, which Playwright drives
(``executable_path``): Playwright's own browser download cannot be reached.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Mapping

from tests.helpers.as_nobody import nobody_command, nobody_env

REPO = Path(__file__).resolve().parents[2]
PAGE_SOURCE = REPO / "cockpit"
PAGE_NAME = "mom"
COCKPIT_WS_PATHS = (Path("/usr/lib/cockpit/cockpit-ws"), Path("/usr/libexec/cockpit-ws"))
CHROMIUM_PATHS = (Path("/usr/bin/chromium"), Path("/usr/lib/chromium/chromium"))
BASE1 = Path("/usr/share/cockpit/base1")


def cockpit_ws_path() -> Path | None:
    return next((p for p in COCKPIT_WS_PATHS if os.access(p, os.X_OK)), None)


def cockpit_bridge_path() -> str | None:
    return shutil.which("cockpit-bridge")


def chromium_path() -> Path | None:
    return next((p for p in CHROMIUM_PATHS if os.access(p, os.X_OK)), None)


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if cockpit_ws_path() is None:
        return "cockpit-ws is not installed (Debian package cockpit-ws)"
    if cockpit_bridge_path() is None:
        return "cockpit-bridge is not installed (Debian package cockpit-bridge)"
    if not (BASE1 / "cockpit.js").exists() and not (BASE1 / "cockpit.js.gz").exists():
        return "Cockpit's base1/cockpit.js is missing (Debian package cockpit-bridge)"
    if chromium_path() is None:
        return "chromium is not installed (Debian package chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (the test extra: pip install -e '.[test]')"
    return None


@contextlib.contextmanager
def staged_page(source: Path = PAGE_SOURCE) -> Iterator[Path]:
    """A data directory holding ``cockpit/mom`` (a copy of ``source``).

    Under /tmp, mode 0755: a bridge running as nobody must read it, and the
    pytest tmp dirs are 0700.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="mom-cockpit-", dir="/tmp"))
    try:
        os.chmod(data_dir, 0o755)
        (data_dir / "cockpit").mkdir(mode=0o755)
        shutil.copytree(source, data_dir / "cockpit" / PAGE_NAME)
        for path in (data_dir / "cockpit").rglob("*"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        yield data_dir
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CockpitWs:
    """cockpit-ws with a local session, serving ``data_dir``'s pages.

    ``bus_env`` carries ``DBUS_SYSTEM_BUS_ADDRESS``; ``as_nobody`` runs it
    (and so every bridge) as nobody.
    """

    def __init__(self, data_dir: Path, bus_env: Mapping[str, str], log: Path, *,
                 as_nobody: bool = False) -> None:
        self.data_dir = data_dir
        self.bus_env = dict(bus_env)
        self.log = log
        self.as_nobody = as_nobody
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def page_url(self, fragment: str = "") -> str:
        """The page itself, outside Cockpit's shell (which needs a login)."""
        return f"{self.url}/cockpit/@localhost/{PAGE_NAME}/index.html{fragment}"

    def start(self, timeout: float = 30.0) -> None:
        ws = cockpit_ws_path()
        bridge = cockpit_bridge_path()
        if ws is None or bridge is None:
            raise FileNotFoundError("cockpit-ws or cockpit-bridge is not installed")
        env = nobody_env() if self.as_nobody else dict(os.environ)
        for name in ("DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "NOTIFY_SOCKET"):
            env.pop(name, None)
        env.update(self.bus_env)
        env["XDG_DATA_DIRS"] = f"{self.data_dir}:/usr/share"
        # Tried until it binds: the port found free may be taken meanwhile.
        deadline = time.monotonic() + timeout
        while True:
            self.port = free_port()
            argv = [str(ws), f"--local-session={bridge}", "--address=127.0.0.1",
                    f"--port={self.port}"]
            with open(self.log, "ab") as out:
                self.process = subprocess.Popen(
                    nobody_command(argv) if self.as_nobody else argv, env=env, cwd="/",
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True)
            if self._wait_serving(deadline):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"cockpit-ws did not start:\n{self.log_text()}")

    def _wait_serving(self, deadline: float) -> bool:
        """True once the page's manifest is served; False if cockpit-ws exited."""
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/cockpit/@localhost/manifests.json",
                                            timeout=5) as response:
                    if response.status == 200:
                        return True
            time.sleep(0.1)
        return False

    def manifests(self) -> dict:
        """What the bridge says Cockpit's packages are (the shell builds its menu from it)."""
        with urllib.request.urlopen(f"{self.url}/cockpit/@localhost/manifests.json",
                                    timeout=10) as response:
            return json.load(response)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop cockpit-ws and the bridges it started (its process group)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, 15)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 9)
            self.process.wait(timeout)
        self.process = None

    def __enter__(self) -> "CockpitWs":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
