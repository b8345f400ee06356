# Shared by the install scripts (sourced, POSIX sh): install Debian packages that are missing.
#
# apt_install_missing WHO PACKAGES...: installs with apt-get (as root, without recommended
# packages) those of PACKAGES not installed yet; exits 1 with one line "WHO: reason" when it
# cannot (not root, no apt-get, apt failed: its first "E:" line).

apt_fail() {
    echo "$1: $2" >&2
    exit 1
}

# The first "E:" line of apt's output (else its last line): the reason to print.
apt_error() {
    printf '%s\n' "$1" | grep -E '^E:' | head -n 1 | grep . || printf '%s\n' "$1" | tail -n 1
}

apt_install_missing() {
    who=$1
    shift
    missing=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    [ -n "$missing" ] || return 0
    [ "$(id -u)" -eq 0 ] || apt_fail "$who" "needs root to apt-get install:$missing"
    command -v apt-get >/dev/null 2>&1 || apt_fail "$who" "no apt-get here; install by hand:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # Wait for a concurrent apt/dpkg (another test session) rather than failing at once.
    apt="apt-get -q -y -o DPkg::Lock::Timeout=300 --no-install-recommends"
    # shellcheck disable=SC2086
    if ! $apt install $missing >/dev/null 2>&1; then
        # Stale or empty package lists: refresh them once, then try again.
        out=$(apt-get -q -o DPkg::Lock::Timeout=300 update 2>&1) \
            || apt_fail "$who" "apt-get update failed: $(apt_error "$out")"
        # shellcheck disable=SC2086
        out=$($apt install $missing 2>&1) \
            || apt_fail "$who" "apt-get install failed: $(apt_error "$out")"
    fi
}
