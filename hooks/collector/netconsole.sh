#!/bin/sh
# rescue netconsole: stream the kernel log to the rescue listener over UDP, from the moment the NIC has an
# address. Runs on every boot from the generator's hook (initramfs-tools init-premount, dracut settled and
# pre-mount), and does nothing unless rescue.netconsole=1 is on the kernel command line or
# RESCUE_NETCONSOLE=1 in /etc/rescue.conf (rescue.netconsole=0 turns a baked-in setting off).
#
# Arms dynamic netconsole through configfs (/sys/kernel/config/netconsole/rescue) in the extended format,
# raises the console loglevel so that every message passes, then writes the identity line
# `rescue: boot=<boot id> machine=<machine>` to /dev/kmsg so the stream names its boot. netconsole is kernel
# state: it survives switch_root and keeps streaming in the real system. What happened is kept in
# /run/rescue/netconsole.txt, which the collector sends in its bundle; it also marks the work done, so a
# second call in the same boot does nothing.
#
# Usage: /bin/sh /lib/rescue/netconsole.sh   (conf.sh and net.sh beside it). POSIX sh for busybox ash.
# For tests: RESCUE_PREFIX (a fake root for /proc, /sys, /etc, /run, /dev/kmsg; nothing is then mounted and
# the loglevel goes to its proc/sys/kernel/printk), RESCUE_CONFIGFS (instead of /sys/kernel/config),
# RESCUE_MODPROBE (instead of modprobe, e.g. `false`), RESCUE_WORKDIR, as in collect.sh.

PREFIX=${RESCUE_PREFIX:-}
LIB=${0%/*}
[ "$LIB" != "$0" ] || LIB=.
# shellcheck source=conf.sh source-path=SCRIPTDIR
. "$LIB/conf.sh"
# shellcheck source=base.sh source-path=SCRIPTDIR
. "$LIB/base.sh"

say() {
	echo "rescue: netconsole: $*"
	echo "$*" >>"$STATE"
}

SELF=$0
WORKDIR=${RESCUE_WORKDIR:-$PREFIX/run/rescue}
# shellcheck source=net.sh source-path=SCRIPTDIR
. "$LIB/net.sh"
# shellcheck source=identity.sh source-path=SCRIPTDIR
. "$LIB/identity.sh"

if [ "${1:-}" = __udhcpc ]; then # net.sh's udhcpc runs us back for its events
	shift
	udhcpc_event "$@"
	exit 0
fi

RESCUE_HOST="" RESCUE_PORT=3333 RESCUE_IP="" RESCUE_NETCONSOLE=""
conf_read "$PREFIX/etc/rescue.conf" RESCUE_HOST RESCUE_PORT RESCUE_IP RESCUE_NETCONSOLE
_v=$(cmdline_arg rescue.netconsole) && RESCUE_NETCONSOLE=$_v
[ "$RESCUE_NETCONSOLE" = 1 ] || exit 0
[ "$(cmdline_arg rescue)" = off ] && exit 0
_v=$(cmdline_arg rescue.host) && RESCUE_HOST=$_v
_v=$(cmdline_arg rescue.port) && RESCUE_PORT=$_v
_v=$(cmdline_arg rescue.ip) && RESCUE_IP=$_v

STATE=$WORKDIR/netconsole.txt
bb mkdir -p "$WORKDIR" || exit 0
[ -e "$STATE" ] && exit 0 # once per boot
: >"$STATE"
CONFIGFS=${RESCUE_CONFIGFS:-$PREFIX/sys/kernel/config}
TARGET=$CONFIGFS/netconsole/rescue
# A good boot waits for this: bounded apart from the collector's timeout.
DEADLINE=$(($(now) + ${RESCUE_NETCONSOLE_TIMEOUT:-10}))
STARTED=$(bb cut -d ' ' -f 1 "$PREFIX/proc/uptime" 2>/dev/null)

# Seconds since STARTED, to the hundredth (/proc/uptime: busybox date has whole seconds only).
took() {
	bb awk -v t0="${STARTED:-0}" '{ printf "%.2f", $1 - t0 }' "$PREFIX/proc/uptime" 2>/dev/null
}

# The next hop's MAC (netconsole does no routing): ping makes the kernel resolve it, /proc/net/arp has it.
# Status 1 when it did not answer within about 2 s.
neighbour_mac() {
	bb ping -c 1 -W 1 "$1" >/dev/null 2>&1 &
	_ping=$!
	_i=0
	while [ "$_i" -lt 20 ]; do
		_mac=$(bb awk -v ip="$1" '$1 == ip && $4 != "00:00:00:00:00:00" { print $4; exit }' \
			"$PREFIX/proc/net/arp" 2>/dev/null)
		if [ -n "$_mac" ]; then
			kill "$_ping" 2>/dev/null
			echo "$_mac"
			return 0
		fi
		bb usleep 100000
		_i=$((_i + 1))
	done
	kill "$_ping" 2>/dev/null
	# Last: busybox arping prints the reply's MAC itself ("Unicast reply from IP [MAC]").
	bb arping -c 1 -w 1 -I "$2" "$1" 2>/dev/null | bb sed -n 's/.*reply from [^[]*\[\([0-9A-Fa-f:]*\)\].*/\1/p' |
		bb head -n 1 | bb grep .
}

# The generator's modprobe (kmod's, which knows compressed modules), else busybox's.
load_module() {
	if [ -n "${RESCUE_MODPROBE:-}" ]; then
		"$RESCUE_MODPROBE" "$1" 2>/dev/null
	else
		modprobe "$1" 2>/dev/null || bb modprobe "$1" 2>/dev/null
	fi
}

# configfs mounted and the netconsole module loaded; status 1, said, when this kernel or image cannot.
netconsole_ready() {
	if [ ! -d "$CONFIGFS/netconsole" ]; then
		load_module configfs
		if [ -z "$PREFIX" ] && ! bb grep -q " $CONFIGFS configfs " /proc/mounts 2>/dev/null; then
			bb mount -t configfs configfs "$CONFIGFS" 2>/dev/null
		fi
		load_module netconsole
	fi
	[ -d "$CONFIGFS/netconsole" ] && return 0
	if ! bb grep -q " configfs " "$PREFIX/proc/mounts" 2>/dev/null; then
		say "unavailable: configfs is not mounted and cannot be (no configfs in this kernel or image)"
	elif [ ! -d "$PREFIX/sys/module/netconsole" ]; then
		say "unavailable: the netconsole module is not in this image (or this kernel has no netconsole)"
	else
		say "unavailable: this kernel's netconsole has no configfs targets (CONFIG_NETCONSOLE_DYNAMIC)"
	fi
	return 1
}

# write FILE VALUE: one configfs attribute; status 1, said, when the kernel refuses it.
nc_set() {
	if ! echo "$2" >"$TARGET/$1" 2>"$WORKDIR/netconsole.err"; then
		say "failed: $1=$2 refused: $(bb cat "$WORKDIR/netconsole.err")"
		return 1
	fi
}

arm() {
	case $RESCUE_HOST in
	'')
		say "not armed: no listener (rescue.host=)"
		return 1
		;;
	*[!0-9.]* | *.*.*.*.*)
		say "not armed: rescue.host=$RESCUE_HOST is not an IPv4 address (netconsole sends to an address)"
		return 1
		;;
	esac
	netconsole_ready || return 1
	net_up || say "network: no address yet (see below)"
	# dev, source address and next hop as the routing table sees them: "H [via G] dev D src S".
	set -f
	# shellcheck disable=SC2046  # one word per field
	set -- $(bb ip route get "$RESCUE_HOST" 2>/dev/null | bb head -n 1)
	set +f
	_dev="" _src="" _via=""
	while [ $# -gt 1 ]; do
		case $1 in
		dev) _dev=$2 ;;
		src) _src=$2 ;;
		via) _via=$2 ;;
		esac
		shift
	done
	if [ -z "$_dev" ] || [ -z "$_src" ]; then
		say "not armed: no route to $RESCUE_HOST (network: $NET_METHOD)"
		return 1
	fi
	_hop=${_via:-$RESCUE_HOST}
	if ! _mac=$(neighbour_mac "$_hop" "$_dev"); then
		say "not armed: $_hop (the next hop to $RESCUE_HOST) did not answer ARP on $_dev"
		return 1
	fi
	bb mkdir "$TARGET" 2>/dev/null
	[ "$(bb cat "$TARGET/enabled" 2>/dev/null)" = 1 ] && nc_set enabled 0
	nc_set dev_name "$_dev" && nc_set local_ip "$_src" && nc_set remote_ip "$RESCUE_HOST" &&
		nc_set remote_mac "$_mac" && nc_set remote_port "$RESCUE_PORT" && nc_set extended 1 || return 1
	# Messages below the console loglevel never reach a console, netconsole included.
	if [ -n "$PREFIX" ]; then
		echo 8 >"$PREFIX/proc/sys/kernel/printk"
	else
		bb dmesg -n 8 2>/dev/null || echo 8 >/proc/sys/kernel/printk
	fi
	nc_set enabled 1 || return 1
	say "armed in $(took)s: $_dev $_src -> $RESCUE_HOST:$RESCUE_PORT via $_mac (${_via:+gateway $_via, }network: $NET_METHOD)"
	# After enabling, so that the stream carries it.
	identity "$_dev"
	identity_kmsg
}

arm
exit 0
