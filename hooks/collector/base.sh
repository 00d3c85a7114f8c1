#!/bin/sh
# rescue collector, base: what every script of the collector that runs in the initramfs starts with.
# Sourced by collect.sh and netconsole.sh after PREFIX is set; POSIX sh for busybox ash.
# shellcheck shell=sh

# busybox's applets behave the same in every image (dracut images have no nc, and other tools under the same
# names behave differently), so use them whenever a busybox binary is there.
BB=""
for _b in /bin/busybox /usr/bin/busybox /sbin/busybox /lib/rescue/busybox; do
	if [ -x "$_b" ]; then
		BB=$_b
		break
	fi
done

bb() {
	if [ -n "$BB" ]; then
		"$BB" "$@"
	else
		"$@"
	fi
}

now() {
	bb date +%s
}

# Seconds left before the caller's DEADLINE (never negative).
left() {
	_l=$((DEADLINE - $(now)))
	[ "$_l" -gt 0 ] || _l=0
	echo "$_l"
}

CMDLINE=""
[ -r "$PREFIX/proc/cmdline" ] && CMDLINE=$(bb cat "$PREFIX/proc/cmdline")

# The value of the last NAME=value word on the kernel command line; status 1 when absent.
cmdline_arg() {
	_found=1
	set -f
	for _w in $CMDLINE; do
		case $_w in
		"$1="*)
			_val=${_w#*=}
			_found=0
			;;
		esac
	done
	set +f
	[ "$_found" = 0 ] && echo "$_val"
	return "$_found"
}
