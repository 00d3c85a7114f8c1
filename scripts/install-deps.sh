#!/bin/sh
# Install the Debian packages named as arguments when any is missing (needs root and apt-get).
# Runs on a fresh machine from `make deps`; does nothing when everything is already there.
set -eu
missing=""
for pkg in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
        *" installed") ;;
        *) missing="$missing $pkg" ;;
    esac
done
[ -n "$missing" ] || exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: missing Debian packages:$missing (run as root with apt-get, or install them)" >&2
    exit 1
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -q
# Recommends included: the tests were written against packages installed that way.
# shellcheck disable=SC2086  # word splitting of the package list is wanted
apt-get -o DPkg::Lock::Timeout=600 install -y -q $missing
