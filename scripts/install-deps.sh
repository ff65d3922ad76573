#!/usr/bin/env bash
# Make sure the Debian packages that building and testing mom need are present.
#
# Only missing packages are installed, and `apt-get update` runs only when
# something has to be installed. As root the packages are installed; as any
# other user the script prints the apt-get command to run and fails.
#
# Usage: scripts/install-deps.sh [PYTHON]   (PYTHON defaults to python3)
set -euo pipefail

PYTHON=${1:-python3}

# Build tools and headers for the C extensions (libvirt-python, systemd-python),
# and what the integration tests run: a private D-Bus daemon, polkit, a libvirt
# daemon with the QEMU driver, and QEMU itself booting a busybox guest.
# libvirt-daemon-system is deliberately absent: it enables and starts system
# services, while the tests start their own daemons.
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
)

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "install-deps: not a Debian system; make sure these (or their equivalents) are installed:" >&2
    echo "  ${packages[*]}" >&2
    exit 0
fi

# Python headers: a pyenv or self-built Python ships its own; only a Debian
# Python needs python3-dev. Likewise Debian's Python needs python3-venv for
# `python3 -m venv` to bootstrap pip.
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

install_cmd="apt-get install -y --no-install-recommends ${missing[*]}"

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing Debian packages: ${missing[*]}" >&2
    echo "install-deps: install them as root, then run make again:" >&2
    echo "  sudo apt-get update && sudo $install_cmd" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"

# Keep package scripts from starting system services (dbus, polkit, libvirt)
# on this machine while installing: the tests run private instances. Only do
# so when no policy-rc.d is in place already, and always remove ours.
policy_rc=/usr/sbin/policy-rc.d
if [ ! -e "$policy_rc" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy_rc"
    chmod 755 "$policy_rc"
    trap 'rm -f "$policy_rc"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
# shellcheck disable=SC2086
$install_cmd
