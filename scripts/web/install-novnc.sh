#!/bin/sh
# Install noVNC, the VNC client of the web console's graphical console, for `bollard server`
# (src/bollard/server/web/novnc.py serves it at /ui/novnc).
#
# With npm: the npm package @novnc/novnc, pinned (version and the registry's sha512), unpacked
# into VENV/share/bollard/novnc (its core/ and vendor/ are plain ES modules). Without npm (or if
# the download fails): Debian's `novnc` package in /usr/share/novnc, found by the server at run
# time, if it is installed. Either way the copy is checked first: core/rfb.js and every module
# it imports must be there, imported by relative paths a browser resolves (no bare npm names).
# With neither, one line says the graphical console will be unavailable, and the exit status
# is 0: the rest of Bollard works without it.
#
# Usage: scripts/web/install-novnc.sh VENV   (e.g. .venv)
set -eu

VERSION=1.7.0
INTEGRITY=sha512-ucEJOx4T2avIRCleodk7YobZj5O2Ga2AeLfQ69A/yjG9HHba2+PDgwSkN3FttrmG+70ZGx21sElNFouK13RzyA==
DEBIAN_DIR=/usr/share/novnc

[ $# -eq 1 ] || { echo "usage: scripts/web/install-novnc.sh VENV" >&2; exit 2; }
VENV=$1
PY="$VENV/bin/python"
DEST="$VENV/share/bollard/novnc"
[ -x "$PY" ] || { echo "install-novnc.sh: no Python in the virtualenv $VENV" >&2; exit 1; }

check() {  # DIR: can a browser load core/rfb.js from it? (the reasons go to stderr)
    "$PY" -m bollard.server.web.novnc check "$1"
}

from_npm() {
    command -v npm >/dev/null 2>&1 || return 1
    if [ -f "$DEST/package.json" ] && grep -q "\"version\": \"$VERSION\"" "$DEST/package.json" \
        && check "$DEST" 2>/dev/null; then
        echo "noVNC $VERSION is installed in $DEST"
        return 0
    fi
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    if ! npm pack --silent --pack-destination "$tmp" "@novnc/novnc@$VERSION" >"$tmp/npm.log" 2>&1; then
        echo "install-novnc.sh: npm could not fetch @novnc/novnc@$VERSION: $(tail -n 1 "$tmp/npm.log")" >&2
        return 1
    fi
    tarball=$(ls "$tmp"/*.tgz)
    got=$("$PY" -c 'import base64, hashlib, sys
print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tarball")
    if [ "$got" != "$INTEGRITY" ]; then
        echo "install-novnc.sh: @novnc/novnc@$VERSION does not match its pinned sha512: not installed" >&2
        return 1
    fi
    mkdir -p "$tmp/unpacked"
    tar -xzf "$tarball" -C "$tmp/unpacked" || return 1
    src="$tmp/unpacked/package"
    check "$src" || { echo "install-novnc.sh: @novnc/novnc@$VERSION cannot be served as is" >&2; return 1; }
    mkdir -p "$(dirname "$DEST")" || return 1
    rm -rf "$DEST.new"
    mkdir "$DEST.new" || return 1
    cp -R "$src/core" "$src/vendor" "$src/package.json" "$DEST.new/" || return 1
    for f in LICENSE.txt AUTHORS README.md; do
        [ ! -f "$src/$f" ] || cp "$src/$f" "$DEST.new/"
    done
    rm -rf "$DEST"
    mv "$DEST.new" "$DEST" || return 1
    echo "noVNC $VERSION installed in $DEST"
}

from_debian() {
    [ -f "$DEBIAN_DIR/core/rfb.js" ] || return 1
    if ! check "$DEBIAN_DIR"; then
        echo "install-novnc.sh: Debian's noVNC in $DEBIAN_DIR cannot be served as is" >&2
        return 1
    fi
    echo "using Debian's noVNC in $DEBIAN_DIR (the server finds it there)"
}

from_npm || from_debian || echo "noVNC not installed (no npm, no Debian novnc package): the graphical console will be unavailable"
exit 0
