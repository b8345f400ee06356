#!/bin/sh
# Install OpenIPMI's BMC simulator (ipmi_sim, Debian/Ubuntu package "openipmi"), which the
# IPMI power driver's contract tests run against (tests/support/emulators.py calls this
# script when ipmi_sim is missing). Needs root, or sudo without a password prompt.
# Exit status 0 when ipmi_sim is available afterwards.
set -eu

if command -v ipmi_sim >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-ipmi-sim: no apt-get here; install OpenIPMI's ipmi_sim by hand" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "install-ipmi-sim: needs root (or sudo without a password) to apt-get install openipmi" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends openipmi >/dev/null 2>&1 || {
    $SUDO apt-get update >/dev/null
    $SUDO apt-get install -y --no-install-recommends openipmi >/dev/null
}
command -v ipmi_sim >/dev/null 2>&1
