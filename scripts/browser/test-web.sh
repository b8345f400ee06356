#!/bin/sh
# The web console's own checks (`make test-web`, part of `make test`): ESLint (web/eslint.config.js,
# pinned in web/package-lock.json) on src/bollard/server/web/static and web/, then the unit
# tests of the console's pure modules with Node's built-in runner (`node --test web/test/`,
# no npm dependency).
#
# npm ci runs only when web/node_modules is missing or older than the lock file. Where Node.js
# is missing, or npm cannot install ESLint (no npm, no network), the part that cannot run is
# skipped with the reason on stderr; a lint error or a failing test exits non-zero (both
# run either way).
set -eu

cd "$(dirname "$0")/../.."
WEB=web
ESLINT=$WEB/node_modules/.bin/eslint

say() {
    echo "test-web: $*" >&2
}

if ! command -v node >/dev/null 2>&1; then
    say "skipped: Node.js is not installed (apt-get install nodejs npm)"
    exit 0
fi

# ESLint 10 needs Node.js 20.19 or later; node --test exists from Node.js 18 on.
node_ok=$(node -e 'const [a, b] = process.versions.node.split(".").map(Number);
console.log(a > 20 || (a === 20 && b >= 19) ? "yes" : "no")')

lint=yes
if [ "$node_ok" != yes ]; then
    say "ESLint skipped: it needs Node.js 20.19 or later, this is $(node --version)"
    lint=no
elif ! command -v npm >/dev/null 2>&1; then
    say "ESLint skipped: npm is not installed (apt-get install npm)"
    lint=no
elif [ ! -x "$ESLINT" ] || [ ! "$WEB/node_modules/.package-lock.json" -nt "$WEB/package-lock.json" ]; then
    if ! out=$(npm ci --prefix "$WEB" --no-audit --no-fund --loglevel=error 2>&1); then
        reason=$(printf '%s\n' "$out" | grep -m 1 'npm error' || printf '%s\n' "$out" | tail -n 1)
        say "ESLint skipped: npm ci failed: $reason"
        lint=no
    fi
fi

# Both run, whatever the first says; the exit status is non-zero if either failed.
status=0
if [ "$lint" = yes ]; then
    "$ESLINT" --config "$WEB/eslint.config.js" --max-warnings 0 src/bollard/server/web/static "$WEB" \
        || status=1
fi
node --test --test-reporter=spec "$WEB/test/" || status=1
exit $status
