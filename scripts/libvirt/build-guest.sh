#!/bin/sh
# Build (or reuse) the libvirt tests' tiny guest in OUT_DIR: vmlinuz, initrd.gz, guest.json.
# The work is done by tests/support/libvirt_guest.py (standard library only).
# Usage: scripts/libvirt/build-guest.sh OUT_DIR
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
py=${PYTHON:-python3}
[ -x "$root/.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && py="$root/.venv/bin/python"
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m tests.support.libvirt_guest "$@"
