#!/bin/sh
# The fresh-machine proof: a new Debian bookworm (debootstrap, from Debian's packages) with only what a new
# machine of ours has (python3, make, git), /proc, /sys and /dev bound into it, a fresh clone of this
# repository, and CI's own command (`bash .ci/run`, which runs `make test`) inside it. Nothing of the host's
# packages or caches is reused: every install step must come from the project's own files.
#
# Usage: sh scripts/fresh_machine.sh [WORKDIR]   (root; default WORKDIR /var/tmp/rescue-fresh; a few GB)
# Prints the time each step took; exits with the status of .ci/run.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/var/tmp/rescue-fresh}
root=$work/root
# The mirror the host's apt already uses (read only; the host's apt configuration is never changed).
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
mirror=${mirror:-http://deb.debian.org/debian}

cleanup() {
	# Everything mounted at or below the new root, deepest first: /proc, /sys, /dev, the root's own bind
	# mount, and what the tests mount inside (ip netns mounts /run/netns).
	awk -v root="$root" '$2 == root || index($2, root "/") == 1 { print $2 }' /proc/mounts | sort -r |
		while read -r m; do
			umount -l "$m" 2>/dev/null || true
		done
}
trap cleanup 0 1 2 15

step() {
	echo "fresh-machine: $*"
	date +%s >"$work/.step"
}
took() {
	echo "fresh-machine: ... $(($(date +%s) - $(cat "$work/.step"))) s"
}

[ "$(id -u)" = 0 ] || { echo "fresh-machine: run as root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "fresh-machine: apt-get install debootstrap" >&2; exit 1; }
cleanup
rm -rf "$work"
mkdir -p "$work"
start=$(date +%s)

step "debootstrap bookworm from $mirror"
debootstrap --variant=minbase --include=python3,make,git,ca-certificates bookworm "$root" "$mirror" \
	>"$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log"; exit 1; }
took

# The new root is a mount point of its own, as / is on a machine: `ip netns exec` and `unshare
# --propagation` change the propagation of /, which a plain directory does not have.
mount --bind "$root" "$root"
mount --make-private "$root"
mount --bind /proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# A machine here trusts its network's certificate authorities (/usr/local/share/ca-certificates) and points
# pip at the system's store (/etc/pip.conf): a new machine of the same kind has both, so the new root does.
if [ -d /usr/local/share/ca-certificates ]; then
	cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
	chroot "$root" update-ca-certificates >/dev/null
fi
[ ! -f /etc/pip.conf ] || cp /etc/pip.conf "$root/etc/pip.conf"

step "fresh clone"
git clone -q "$repo" "$root/ci/rescue"
took

step "CI=true bash .ci/run (make test) inside"
status=0
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 CI=true \
	/bin/sh -c 'cd /ci/rescue && bash .ci/run' >"$work/ci.log" 2>&1 || status=$?
took
tail -n 15 "$work/ci.log"
echo "fresh-machine: exit $status, $(($(date +%s) - start)) s in all (log: $work/ci.log)"
exit "$status"
