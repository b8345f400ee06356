#!/bin/sh
# Install what the web console's browser tests need (tests/ui, `make test-ui`): Debian's
# Chromium and its WebDriver, fonts-liberation (so text renders the same in every screenshot),
# NSS's certutil (libnss3-tools: the tests make Chromium trust the test cluster's own CA through
# an NSS database in a private HOME), Debian's noVNC (the console's graphical VM console is
# served from /usr/share/novnc), and Playwright's Python package, pinned, into the virtualenv.
# Playwright's wheel bundles the driver it talks to the browser through; the browser is
# Debian's /usr/bin/chromium, so `playwright install` (which downloads a browser build of its
# own) is never run.
#
# Packages go in with --no-install-recommends: chromium's recommends (upower, udev, Mesa's DRI
# drivers, a notification daemon, the printer set-up tool) are for a desktop; headless with
# --disable-gpu it links only libraries its own Depends bring.
#
# Usage: scripts/browser/install.sh [VENV]   (VENV defaults to .venv; Playwright goes there)
# Idempotent and quiet; returns at once when everything is already there. Exit status 0 when
# everything is installed afterwards, else non-zero with a one-line reason on stderr.
set -eu

# shellcheck source=../lib/apt.sh
. "$(dirname "$0")/../lib/apt.sh"

VENV=${1:-.venv}
PACKAGES="chromium chromium-driver fonts-liberation libnss3-tools novnc"
PLAYWRIGHT_VERSION=1.65.3 # keep in step with the `test` extra in pyproject.toml
CHROMIUM=/usr/bin/chromium
PY="$VENV/bin/python"

fail() {
    echo "browser/install.sh: $*" >&2
    exit 1
}

[ -x "$PY" ] || fail "no Python in the virtualenv $VENV (make install first)"

# shellcheck disable=SC2086
apt_install_missing browser/install.sh $PACKAGES

[ -x "$CHROMIUM" ] || fail "$CHROMIUM is missing although the chromium package is installed"

installed=$("$PY" -c 'import importlib.metadata as m; print(m.version("playwright"))' 2>/dev/null || true)
if [ "$installed" != "$PLAYWRIGHT_VERSION" ]; then
    out=$("$PY" -m pip install --quiet --disable-pip-version-check "playwright==$PLAYWRIGHT_VERSION" 2>&1) \
        || fail "pip install playwright==$PLAYWRIGHT_VERSION failed: $(printf '%s\n' "$out" | grep -v '^ ' | grep -v 'is ignored' | tail -n 1)"
    "$PY" -c 'import playwright.sync_api' >/dev/null 2>&1 \
        || fail "playwright installed but 'import playwright.sync_api' fails"
fi
