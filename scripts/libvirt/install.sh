#!/bin/sh
# Install what the libvirt tests need (tests/libvirt, `make test-libvirt`): QEMU (TCG is
# enough), the monolithic libvirtd with its QEMU driver, the client tools, the headers to
# build libvirt-python, and cpio (tests/support/libvirt_guest.py packs the guest's initramfs).
# libvirt-daemon-system is NOT installed: the tests start their own daemons by hand with
# their own configuration (tests/support/libvirt_env.py), so its unit files and default
# configuration are of no use, and on Debian 12 it pulls in systemd-sysv and upgrades the
# systemd packages. The one thing of it libvirtd does need is its system account: the QEMU
# driver resolves its compiled-in default user and group "libvirt-qemu" before it reads
# qemu.conf (which here says user = group = "root"), and refuses to start when they do not
# exist ("Failed to parse user 'libvirt-qemu'"). This script creates them as the package's
# postinst would (system user and group, no home, no login).
# libvirt's lock manager, which every test host runs (virtlockd and libvirtd's lockd plugin,
# lock-driver/lockd.so), comes with libvirt-daemon.
#
# Usage: scripts/libvirt/install.sh [VENV]   (VENV defaults to .venv; libvirt-python goes there)
# Idempotent and quiet; returns at once when everything is already there. Exit status 0 when
# everything is installed afterwards, else non-zero with a one-line reason on stderr.
set -eu

# shellcheck source=../lib/apt.sh
. "$(dirname "$0")/../lib/apt.sh"

VENV=${1:-.venv}
PACKAGES="qemu-system-x86 qemu-utils libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config cpio"
PY="$VENV/bin/python"

fail() {
    echo "libvirt/install.sh: $*" >&2
    exit 1
}

[ -x "$PY" ] || fail "no Python in the virtualenv $VENV (make install first)"

# shellcheck disable=SC2086
apt_install_missing libvirt/install.sh $PACKAGES
command -v virtlockd >/dev/null 2>&1 || fail "virtlockd missing (it comes with libvirt-daemon)"
lockd_plugin=
for f in /usr/lib/*/libvirt/lock-driver/lockd.so /usr/lib64/libvirt/lock-driver/lockd.so; do
    if [ -e "$f" ]; then lockd_plugin=$f; fi
done
[ -n "$lockd_plugin" ] \
    || fail "libvirt's lockd plugin (lock-driver/lockd.so) missing (it comes with libvirt-daemon)"

if ! getent passwd libvirt-qemu >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || fail "needs root to create the system user libvirt-qemu"
    getent group libvirt-qemu >/dev/null 2>&1 || groupadd --system libvirt-qemu \
        || fail "groupadd libvirt-qemu failed"
    useradd --system --gid libvirt-qemu --home-dir /var/lib/libvirt --no-create-home \
        --shell /usr/sbin/nologin --comment "Libvirt Qemu" libvirt-qemu \
        || fail "useradd libvirt-qemu failed"
fi

if ! "$PY" -c 'import libvirt' >/dev/null 2>&1; then
    out=$("$PY" -m pip install --quiet --disable-pip-version-check libvirt-python 2>&1) \
        || fail "pip install libvirt-python failed: $(printf '%s\n' "$out" | grep -v '^ ' | tail -n 1)"
    "$PY" -c 'import libvirt' >/dev/null 2>&1 || fail "libvirt-python installed but 'import libvirt' fails"
fi
