#!/bin/sh
# rescue watchdog: started early in the initramfs (initramfs-tools init-premount, dracut's cmdline hook or,
# with systemd in the initrd, rescue-watchdog.service). If the root filesystem is not mounted rescue.after=S
# seconds after it started, it runs the collector (reason "watchdog"), which sends while the boot goes on
# waiting; the generator's own failure path (panic script, emergency hook) then sends nothing more, as they
# share the collector's once-per-boot marker. This covers `panic=` (initramfs-tools then runs no panic
# scripts) and dracut with systemd, which waits for the root without end unless rd.timeout= is given.
#
# Usage: watchdog.sh GENERATOR   (initramfs-tools or dracut). Stopped by `watchdog.sh stop` (init-bottom,
# pre-pivot) or by systemd when it switches root; it also ends by itself when it wakes to a mounted root.
# It may also be sourced, with RESCUE_LIB=/lib/rescue and the arguments set, in a process of its own (it
# exits that process).
#
# On a good boot it costs one shell that reads a few small files and sleeps: no network, no collector.
# The default S is before the generator gives up: initramfs-tools waits max(30, rootdelay) seconds for the
# root, so 2/3 of that (20 s); dracut's shell init gives up after rd.retry (180 s) and, under systemd,
# rd.timeout= (when given) ends the wait: 2/3 of those, at most 60 s. rescue.after=0 turns it off.
# POSIX sh for busybox ash. For tests: RESCUE_PREFIX, RESCUE_WORKDIR and RESCUE_KMSG as for collect.sh, and
# RESCUE_SH, the shell that runs the collector (instead of /bin/sh).

PREFIX=${RESCUE_PREFIX:-}
# RESCUE_LIB: set when this file is sourced (the initramfs-tools scripts do, to spare a shell per boot).
LIB=${RESCUE_LIB:-${0%/*}}
[ "$LIB" != "$0" ] || LIB=.
WORKDIR=${RESCUE_WORKDIR:-$PREFIX/run/rescue}
PIDFILE=$WORKDIR/watchdog.pid

# First, before anything else is read: ash parses as it goes, so the stop a good boot runs parses little.
if [ "${1:-}" = stop ]; then
	# The marker first: a watchdog that has not written its pid file yet sees it after writing, and ends.
	[ -d "$WORKDIR" ] || mkdir -p "$WORKDIR" || exit 0
	: >"$WORKDIR/watchdog.stopped"
	# The watchdog and its sleep: both, so that nothing of the initramfs outlives the switch to the root.
	if [ -r "$PIDFILE" ]; then
		read -r _pids <"$PIDFILE"
		# shellcheck disable=SC2086  # one pid per word
		kill $_pids 2>/dev/null
	fi
	exit 0
fi
# shellcheck source=conf.sh source-path=SCRIPTDIR
. "$LIB/conf.sh"
# shellcheck source=identity.sh source-path=SCRIPTDIR
. "$LIB/identity.sh"

# No $(...) on this path: under qemu TCG every fork of the shell costs milliseconds, and this runs on
# every boot. Helpers set variables instead of printing.

GENERATOR=${1:-custom}
# This process, also in a subshell (where $$ is the parent's).
read -r SELF _ </proc/self/stat

CMDLINE=""
[ -r "$PREFIX/proc/cmdline" ] && read -r CMDLINE <"$PREFIX/proc/cmdline"

# ARG = the value of the last NAME=value word of the command line, else $2.
arg() {
	ARG=$2
	set -f
	for _arg_w in $CMDLINE; do
		case $_arg_w in
		"$1="*) ARG=${_arg_w#*=} ;;
		esac
	done
	set +f
}

# NUM = $1 when it is a number of seconds, else $2.
seconds() {
	case $1 in
	'' | *[!0-9]*) NUM=$2 ;;
	*) NUM=$1 ;;
	esac
}

# AFTER = 2/3 of the generator's own wait for the root (see the top of this file).
default_after() {
	if [ "$GENERATOR" = initramfs-tools ]; then
		seconds "${ROOTDELAY:-}" 0
		[ "$NUM" -gt 30 ] || NUM=30
		AFTER=$((NUM * 2 / 3))
		return
	fi
	AFTER=60
	arg rd.retry 180
	seconds "$ARG" 180
	[ $((NUM * 2 / 3)) -lt "$AFTER" ] && AFTER=$((NUM * 2 / 3))
	arg rd.timeout ""
	seconds "$ARG" 0
	[ "$NUM" -gt 0 ] && [ $((NUM * 2 / 3)) -lt "$AFTER" ] && AFTER=$((NUM * 2 / 3))
	return 0
}

root_mounted() {
	while read -r _dev _mnt _rest; do
		case $_mnt in
		/root | /sysroot) return 0 ;;
		esac
	done <"$PREFIX/proc/mounts"
	return 1
}

# A passphrase prompt is a boot waiting for a person, not a failed one: the watchdog waits another round.
asking() {
	for _comm in "$PREFIX"/proc/[0-9]*/comm; do
		read -r _name <"$_comm" 2>/dev/null || continue
		case $_name in
		askpass | systemd-ask-pas | systemd-tty-ask | cryptsetup) return 0 ;;
		esac
	done
	return 1
}

arg rescue ""
[ "$ARG" = off ] && exit 0
RESCUE_HOSTNAME="" RESCUE_AFTER=""
conf_read "$PREFIX/etc/rescue.conf" RESCUE_HOSTNAME RESCUE_AFTER
# The identity line early in the kernel log: a netconsole stream carries it from the start.
identity ""
identity_kmsg
arg rescue.after "$RESCUE_AFTER"
seconds "$ARG" ""
AFTER=$NUM
[ -n "$AFTER" ] || default_after
[ "$AFTER" -gt 0 ] || exit 0

[ -d "$WORKDIR" ] || mkdir -p "$WORKDIR" || exit 0
while :; do
	# shellcheck disable=SC2217  # stdin too: a sleep must not hold the console open
	sleep "$AFTER" </dev/null >/dev/null 2>&1 &
	# Plain writes: `stop` writes its marker before it reads this file, and this side looks for the marker
	# after writing, so a half-written file read by `stop` still ends the watchdog.
	echo "$SELF $!" >"$PIDFILE"
	if [ -e "$WORKDIR/watchdog.stopped" ]; then
		kill "$!" 2>/dev/null
		exit 0
	fi
	wait "$!" || exit 0 # killed: the root was mounted and the boot goes on
	root_mounted && exit 0
	asking || break
done
# The collector keeps this pid (exec): `stop` still ends it if the root gets mounted meanwhile.
echo "$SELF" >"$PIDFILE"
echo "rescue: the root filesystem is not mounted after ${AFTER}s; sending the evidence while the boot waits"
RESCUE_GENERATOR=$GENERATOR exec ${RESCUE_SH:-/bin/sh} "$LIB/collect.sh" watchdog
