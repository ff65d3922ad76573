"""Packaging: momd's run-time Debian packages, and ``make deb`` against ``make install``.

The package lists are the ones the project really uses: ``scripts/install-deps.sh
--list`` reads them from debian/control, as ``make install`` and ``make deb`` do.
The .deb is really built (debhelper, dh-python, lintian; ``make deb`` installs
what is missing when run as root), once per checkout and again only when one
of its files changes: ``make`` decides, in the checkout's own ``.cache/deb``.
"""

from __future__ import annotations

import ast
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import momservice

REPO = Path(__file__).resolve().parents[1]
CONTROL = REPO / "debian" / "control"
DEB_DIR = REPO / ".cache" / "deb"
DEB = DEB_DIR / f"mom_{momservice.__version__}_all.deb"

# The Debian package of every module from outside the standard library that
# momservice imports (at the top of a module, in a function or in a try).
MODULE_PACKAGE = {
    "dbus_next": "python3-dbus-next",
    "libvirt": "python3-libvirt",
    "libvirt_qemu": "python3-libvirt",   # GuestQemuAgent's agent commands
    "libvirtaio": "python3-libvirt",
    "pyudev": "python3-pyudev",
    "systemd": "python3-systemd",
}
# Imported only by optional features, inside the function that needs them:
# the .deb suggests their packages, make install does not install them.
OPTIONAL_MODULE_PACKAGE = {
    "matplotlib": "python3-matplotlib",   # momctl lab --report
}
# What momd needs besides Python modules: the system bus it serves on and
# polkit, which it asks before every change.
SYSTEM_PACKAGES = {"dbus", "polkitd"}

# The first test to use the .deb builds it, and may install its build
# dependencies first.
pytestmark = pytest.mark.timeout(900)


def _third_party_imports() -> dict[str, set[str]]:
    """{top-level module: {files importing it}} for momservice's non-stdlib imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "momservice").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top in sys.stdlib_module_names or top in ("__future__", "momservice"):
                    continue
                found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _package_set(name: str) -> list[str]:
    result = subprocess.run(["bash", str(REPO / "scripts" / "install-deps.sh"), "--list",
                             f"--{name}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def _make_variable(name: str) -> str:
    result = subprocess.run(
        ["make", "--no-print-directory", "-s", f"--eval=print-var: ; @echo $({name})",
         "print-var"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# --------------------------------------------------------------------------
# The run-time packages


def test_every_third_party_import_has_its_debian_package():
    imports = _third_party_imports()
    known = {**MODULE_PACKAGE, **OPTIONAL_MODULE_PACKAGE}
    unmapped = {m: sorted(files) for m, files in imports.items() if m not in known}
    assert not unmapped, f"imports with no Debian package in MODULE_PACKAGE: {unmapped}"
    # A module no longer imported: its package may be a dependency no more.
    assert sorted(imports) == sorted(known)


def test_optional_modules_are_imported_only_where_they_are_used():
    # At the top of a module, an optional import would be needed by everyone.
    for path in sorted((REPO / "momservice").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""])
                assert not {n.partition(".")[0] for n in names} & set(OPTIONAL_MODULE_PACKAGE), \
                    f"{path.relative_to(REPO)}:{node.lineno} imports an optional module"


def test_make_install_runtime_set_has_every_package_momd_needs():
    runtime = set(_package_set("runtime"))
    missing = (set(MODULE_PACKAGE.values()) | SYSTEM_PACKAGES) - runtime
    assert not missing, f"scripts/install-deps.sh --runtime lacks {sorted(missing)}"
    # Debian's Python, and what `make install` builds the package with.
    assert {"python3", "python3-pip", "python3-setuptools", "python3-wheel"} <= runtime


def test_make_install_checks_the_modules_momd_imports():
    modules = _make_variable("RUNTIME_MODULES").split()
    assert {m.partition(".")[0] for m in modules} == \
        set(_third_party_imports()) - set(OPTIONAL_MODULE_PACKAGE)
    # Real module names: the check after `make install` imports each one
    # (here from the venv, where pip installed the same projects).
    for module in modules:
        result = subprocess.run([sys.executable, "-c", f"import {module}"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{module}: {result.stderr}"


def test_install_python_is_debians_own_python():
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no /usr/bin/python3")
    # The python3-* packages live in Debian's dist-packages, which only
    # /usr/bin/python3 searches, whatever `python3` PATH finds first.
    assert _make_variable("INSTALL_PYTHON") == "/usr/bin/python3"


def test_deb_build_set_is_the_build_depends_plus_lintian():
    build = _package_set("deb")
    assert build[-1] == "lintian"
    # debhelper-compat is virtual: debhelper provides it.
    for package in ("debhelper", "dh-python", "pybuild-plugin-pyproject", "python3-all",
                    "python3-setuptools"):
        assert package in build, package
    assert not [p for p in build if re.search(r"[\s(,:$]", p)], build


def test_changelog_is_at_the_package_version():
    first = (REPO / "debian" / "changelog").read_text().splitlines()[0]
    match = re.match(r"mom \(([^)]+)\) ", first)
    assert match, first
    assert match.group(1) == momservice.__version__


# --------------------------------------------------------------------------
# make deb


def _tree_state() -> tuple[str, list[str]]:
    """git's view of the checkout, and build leftovers git would ignore."""
    status = ""
    if (REPO / ".git").exists() and shutil.which("git"):
        status = subprocess.run(["git", "status", "--porcelain"], cwd=REPO,
                                capture_output=True, text=True, timeout=60).stdout
    leftovers = [str(p.relative_to(REPO)) for pattern in
                 ("build", "*.egg-info", ".pybuild", "debian/mom", "debian/.debhelper",
                  "debian/files", "debian/*.substvars", "debian/man", "dist")
                 for p in REPO.glob(pattern)]
    return status, leftovers


@pytest.fixture(scope="module")
def deb() -> Path:
    """The .deb of this checkout, built by `make deb` unless up to date."""
    if shutil.which("make") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("make deb needs make and a Debian system")
    if os.geteuid() != 0:
        deps = subprocess.run(["bash", str(REPO / "scripts" / "install-deps.sh"), "--deb"],
                              capture_output=True, text=True, timeout=60)
        if deps.returncode != 0:
            pytest.skip(f"the build dependencies are missing: {deps.stderr.strip()}")
    before = _tree_state()
    result = subprocess.run(["make", "--no-print-directory", "deb", f"DIST={DEB_DIR}"],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert DEB.is_file(), result.stdout[-2000:]
    # Built out of tree: the checkout is as it was.
    assert _tree_state() == before
    return DEB


def _deb_files(deb: Path) -> dict[str, tuple[int, bytes]]:
    """{path: (mode, content)} for the regular files and symbolic links of a .deb
    (a link's content is its target)."""
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                          check=True, timeout=60).stdout
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                content = tar.extractfile(member).read()
                files[member.name.removeprefix("./")] = (member.mode, content)
            elif member.issym():
                files[member.name.removeprefix("./")] = (member.mode, member.linkname.encode())
    return files


_PYLIB = re.compile(r"^usr/lib/python3[^/]*/(?:site|dist)-packages/")


def _comparable(paths: list[str]) -> set[str]:
    """Paths with the Python library dir normalized, pip's own records dropped."""
    out = set()
    for path in paths:
        path = _PYLIB.sub("PYTHONLIB/", path)
        if "__pycache__/" in path or ".dist-info/" in path:
            continue
        out.add(path)
    return out


def test_deb_has_the_files_of_make_install(deb: Path, tmp_path: Path):
    stage = tmp_path / "root"
    result = subprocess.run(
        ["make", "--no-print-directory", "install", f"DESTDIR={stage}", "PREFIX=/usr",
         f"INSTALL_PYTHON={sys.executable}"],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    staged = [str(p.relative_to(stage)) for p in stage.rglob("*")
              if p.is_file() or p.is_symlink()]

    files = _deb_files(deb)
    in_deb = list(files)
    # Only the package has a changelog, a copyright file and manual pages
    # (the examples in usr/share/doc/mom/examples/ come with both).
    extras = {n for n in in_deb if n.startswith(("usr/share/doc/mom/", "usr/share/man/"))
              and not n.startswith("usr/share/doc/mom/examples/")}
    assert {"usr/share/doc/mom/copyright", "usr/share/man/man8/momd.8.gz",
            "usr/share/man/man1/momctl.1.gz"} <= extras
    assert _comparable([n for n in in_deb if n not in extras]) == _comparable(staged)
    assert [n for n in in_deb if re.match(r"usr/lib/python3/dist-packages/mom-"
                                          + re.escape(momservice.__version__)
                                          + r"\.dist-info/METADATA$", n)]

    # The files the bus, polkit and systemd read are the repository's, as is.
    for name in ("usr/share/dbus-1/system.d/org.ovirt.mom1.conf",
                 "usr/share/dbus-1/system-services/org.ovirt.mom1.service",
                 "usr/share/polkit-1/actions/org.ovirt.mom1.policy",
                 "lib/systemd/system/momd.service",
                 "usr/share/doc/mom/examples/50-org.ovirt.mom1-manage.rules.example",
                 "usr/share/doc/mom/examples/mom-dashboard.json",
                 *(f"usr/share/mom/policies/{p.name}" for p in (REPO / "policies").glob("*.policy"))):
        mode, content = files[name]
        assert content == (stage / name).read_bytes(), name
        assert mode & 0o777 == 0o644, name
    for script in ("usr/bin/momd", "usr/bin/momctl"):
        mode, content = files[script]
        assert mode & 0o777 == 0o755, script
        assert content.startswith(b"#!/usr/bin/python3\n"), script


def _field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "--field", str(deb), name], capture_output=True,
                          text=True, check=True, timeout=60).stdout.strip()


def test_deb_control_fields(deb: Path):
    assert _field(deb, "Package") == "mom"
    assert _field(deb, "Version") == momservice.__version__
    assert _field(deb, "Architecture") == "all"
    depends = {re.sub(r"\s*\(.*\)", "", d).strip() for d in _field(deb, "Depends").split(",")}
    missing = (set(MODULE_PACKAGE.values()) | SYSTEM_PACKAGES) - depends
    assert not missing, depends
    assert any(d.startswith("python3") and d not in MODULE_PACKAGE.values() for d in depends)
    assert "libvirt-daemon-system" in _field(deb, "Recommends")
    suggests = {d.strip() for d in _field(deb, "Suggests").split(",")}
    assert set(OPTIONAL_MODULE_PACKAGE.values()) <= suggests
    assert not set(OPTIONAL_MODULE_PACKAGE.values()) & depends
    # The package and `make install` install the same run-time packages.
    assert {d for d in depends if not d.startswith("python3:")} <= set(_package_set("runtime"))


def test_deb_enables_the_unit_through_dh_installsystemd(deb: Path, tmp_path: Path):
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "--control", str(deb), str(control)], check=True, timeout=60)
    postinst = (control / "postinst").read_text()
    assert "deb-systemd-helper enable 'momd.service'" in postinst
    assert "deb-systemd-invoke $_dh_action 'momd.service'" in postinst
    # Byte-compiled on the host by dh_python3, not shipped.
    assert "py3compile -p mom" in postinst


def test_lintian_reports_no_error(deb: Path):
    lintian = shutil.which("lintian")
    if lintian is None:
        pytest.skip("lintian is not installed")
    result = subprocess.run([lintian, str(deb)], capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stdout.splitlines() if line.startswith("E:")]
    assert not errors, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def test_make_deb_again_changes_nothing(deb: Path):
    built = deb.stat().st_mtime_ns
    before = _tree_state()
    result = subprocess.run(["make", "--no-print-directory", "deb", f"DIST={DEB_DIR}"],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Nothing to be done" in result.stdout, result.stdout
    assert deb.stat().st_mtime_ns == built
    assert _tree_state() == before
