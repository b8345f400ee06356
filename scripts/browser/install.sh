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

VENV=${1:-.venv}
PACKAGES="chromium chromium-driver fonts-liberation libnss3-tools novnc"
PLAYWRIGHT_VERSION=1.65.3 # keep in step with the `test` extra in pyproject.toml
CHROMIUM=/usr/bin/chromium
PY="$VENV/bin/python"

fail() {
    echo "browser/install.sh: $*" >&2
    exit 1
}

# The first "E:" line of apt's output (else its last line): the reason to print.
apt_error() {
    printf '%s\n' "$1" | grep -E '^E:' | head -n 1 | grep . || printf '%s\n' "$1" | tail -n 1
}

[ -x "$PY" ] || fail "no Python in the virtualenv $VENV (make install first)"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done

if [ -n "$missing" ]; then
    [ "$(id -u)" -eq 0 ] || fail "needs root to apt-get install:$missing"
    command -v apt-get >/dev/null 2>&1 || fail "no apt-get here; install by hand:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # Wait for a concurrent apt/dpkg (another test session) rather than failing at once.
    apt="apt-get -q -y -o DPkg::Lock::Timeout=300 --no-install-recommends"
    # shellcheck disable=SC2086
    if ! $apt install $missing >/dev/null 2>&1; then
        # Stale or empty package lists: refresh them once, then try again.
        out=$(apt-get -q -o DPkg::Lock::Timeout=300 update 2>&1) \
            || fail "apt-get update failed: $(apt_error "$out")"
        # shellcheck disable=SC2086
        out=$($apt install $missing 2>&1) \
            || fail "apt-get install failed: $(apt_error "$out")"
    fi
fi

[ -x "$CHROMIUM" ] || fail "$CHROMIUM is missing although the chromium package is installed"

installed=$("$PY" -c 'import importlib.metadata as m; print(m.version("playwright"))' 2>/dev/null || true)
if [ "$installed" != "$PLAYWRIGHT_VERSION" ]; then
    out=$("$PY" -m pip install --quiet --disable-pip-version-check "playwright==$PLAYWRIGHT_VERSION" 2>&1) \
        || fail "pip install playwright==$PLAYWRIGHT_VERSION failed: $(printf '%s\n' "$out" | grep -v '^ ' | grep -v 'is ignored' | tail -n 1)"
    "$PY" -c 'import playwright.sync_api' >/dev/null 2>&1 \
        || fail "playwright installed but 'import playwright.sync_api' fails"
fi
