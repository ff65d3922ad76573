#!/usr/bin/env bash
# Make sure the Debian packages a make target needs are present.
#
# Only missing packages are installed, and `apt-get update` runs only when
# something has to be installed. As root the packages are installed; as any
# other user the script prints the apt-get command to run and fails.
#
# Usage: scripts/install-deps.sh [--list] [--test|--runtime|--deb] [PYTHON]
#   --list     print the packages of the set, one a line, and install nothing
#   --test     (the default) building and testing mom: `make test`
#   --runtime  running momd with Debian's python3: `make install`.  The
#              packages are the Depends: of debian/control, so the .deb and
#              `make install` cannot drift apart, plus pip, setuptools and
#              wheel, which `make install` builds and installs the package with
#   --deb      building the Debian package: the Build-Depends: of
#              debian/control, plus lintian: `make deb`
# PYTHON (default python3) is the Python `make test` builds its venv with.
set -euo pipefail

list_only=
if [ "${1:-}" = --list ]; then
    list_only=yes
    shift
fi
set_name=test
case "${1:-}" in
    --test|--runtime|--deb) set_name=${1#--}; shift ;;
    -*) echo "install-deps: unknown option $1" >&2; exit 2 ;;
esac
PYTHON=${1:-python3}

control="$(dirname "${BASH_SOURCE[0]}")/../debian/control"

# The package names of one field of debian/control (all its paragraphs):
# continuation lines joined, versions, architectures, build profiles and
# substitution variables (${python3:Depends}) dropped, the first of
# alternatives kept, each package once (a version range names it twice).
# Virtual packages are named by what provides them.
control_packages() {
    awk -v field="$1" '
        /^#/ { next }
        /^[^ \t]/ { on = (index($0, field ":") == 1); if (on) sub(/^[^:]*:/, "") }
        /^[ \t]/ && !on { next }
        on { print }
    ' "$control" | tr ',' '\n' | sed -e 's/|.*//' -e 's/([^)]*)//g' -e 's/\[[^]]*\]//g' \
        -e 's/<[^>]*>//g' -e 's/:any//' -e 's/:native//' -e 's/[[:space:]]//g' \
        | grep -v -e '^$' -e '^\${' | sed -e 's/^debhelper-compat$/debhelper/' \
        | awk '!seen[$0]++'
}

test_packages() {
    # Build tools and headers for the C extensions (libvirt-python,
    # systemd-python), and what the integration tests run: a private D-Bus
    # daemon, polkit, a libvirt daemon with the QEMU driver, and QEMU itself
    # booting a busybox guest; Cockpit's web server and bridge and Chromium
    # for the Cockpit page's browser tests (Playwright drives Debian's
    # chromium: its own browser download cannot be reached).
    # libvirt-daemon-system is deliberately absent:
    # it enables and starts system services, while the tests start their own
    # daemons.
    packages=(
        pkg-config
        gcc
        libvirt-dev
        libsystemd-dev
        dbus
        dbus-daemon
        polkitd
        libvirt-daemon
        libvirt-clients
        libvirt-daemon-driver-qemu
        qemu-system-x86
        qemu-utils
        busybox-static
        cockpit-ws
        cockpit-bridge
        chromium
    )
    # Python headers: a pyenv or self-built Python ships its own; only a
    # Debian Python needs python3-dev. Likewise Debian's Python needs
    # python3-venv for `python3 -m venv` to bootstrap pip.
    if command -v "$PYTHON" >/dev/null 2>&1; then
        include_dir=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
        if [ ! -f "$include_dir/Python.h" ]; then
            packages+=(python3-dev)
        fi
        if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
            packages+=(python3-venv)
        fi
    else
        packages+=(python3 python3-dev python3-venv)
    fi
}

case $set_name in
    test)
        test_packages
        ;;
    runtime)
        mapfile -t packages < <(control_packages Depends)
        packages+=(python3 python3-pip python3-setuptools python3-wheel)
        ;;
    deb)
        mapfile -t packages < <(control_packages Build-Depends)
        packages+=(lintian)
        ;;
esac

if [ -n "$list_only" ]; then
    printf '%s\n' "${packages[@]}"
    exit 0
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "install-deps: not a Debian system; make sure these (or their equivalents) are installed:" >&2
    echo "  ${packages[*]}" >&2
    exit 0
fi

missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    if [ "${status:0:2}" != "ii" ]; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

# The lock timeout: another apt (unattended upgrades, a second make) waits
# instead of failing.
install_cmd="apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends ${missing[*]}"

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing Debian packages: ${missing[*]}" >&2
    echo "install-deps: install them as root, then run make again:" >&2
    echo "  sudo apt-get update && sudo $install_cmd" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"

# For the test packages, keep package scripts from starting system services
# (dbus, polkit, libvirt) on this machine while installing: the tests run
# private instances.  Only do so when no policy-rc.d is in place already,
# and always remove ours.  A host installing momd's run-time packages wants
# its system bus and polkit running, so there they start as usual.
policy_rc=/usr/sbin/policy-rc.d
if [ "$set_name" = test ] && [ ! -e "$policy_rc" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy_rc"
    chmod 755 "$policy_rc"
    trap 'rm -f "$policy_rc"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update
# shellcheck disable=SC2086
$install_cmd
