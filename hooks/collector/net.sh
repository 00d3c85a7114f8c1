#!/bin/sh
# rescue collector, network: bring an address up for the send (an existing /run/net-*.conf, static from
# ip=/rescue.ip=, the link up then klibc ipconfig, busybox udhcpc, initramfs-tools' configure_networking).
# Sourced by collect.sh (which sets PREFIX, WORKDIR and the helpers bb, say, left); POSIX sh for busybox ash.
# shellcheck shell=sh disable=SC2154  # the variables collect.sh sets before it sources this file

# --- network --------------------------------------------------------------------------------------------

NETSYS=${RESCUE_SYSNET:-$PREFIX/sys/class/net}
RUNDIR=${RESCUE_RUNDIR:-$PREFIX/run}
NET_METHOD=""
NET_DEVICE=""

# Field N (1-based) of a kernel ip= value (client:server:gw:mask:host:device:autoconf:...).
ip_field() {
	echo "$1" | bb cut -d: -f"$2"
}

# A static ip= value names a client address and no autoconfiguration.
ip_is_static() {
	_c=$(ip_field "$1" 1)
	_a=$(ip_field "$1" 7)
	case $_c in
	*.*.*.*) ;;
	*) return 1 ;;
	esac
	case $_a in
	'' | off | none | static) return 0 ;;
	esac
	return 1
}

# The interface to use: ip= device field, the BOOTIF MAC, DEVICE, else the first non-loopback one with a link.
pick_device() {
	_d=""
	_ip=$(cmdline_arg ip) && _d=$(ip_field "$_ip" 6)
	[ -z "$_d" ] && [ -n "${RESCUE_IP:-}" ] && _d=$(ip_field "$RESCUE_IP" 6)
	if [ -z "$_d" ]; then
		_bootif=$(cmdline_arg BOOTIF) || _bootif=${BOOTIF:-}
		if [ -n "$_bootif" ]; then
			_mac=$(echo "${_bootif#*-}" | bb tr 'A-F-' 'a-f:')
			for _n in "$NETSYS"/*; do
				[ "$(bb cat "$_n/address" 2>/dev/null)" = "$_mac" ] && _d=${_n##*/} && break
			done
		fi
	fi
	[ -z "$_d" ] && _d=${DEVICE:-}
	if [ -z "$_d" ]; then
		_first=""
		for _n in "$NETSYS"/*; do
			_n=${_n##*/}
			case $_n in
			lo | '*') continue ;;
			esac
			[ -z "$_first" ] && _first=$_n
			bb ip link set "$_n" up 2>/dev/null
		done
		# Wait briefly for a carrier: the first interface that has one wins.
		_i=0
		while [ -z "$_d" ] && [ -n "$_first" ] && [ "$_i" -lt 30 ]; do
			for _n in "$NETSYS"/*; do
				_n=${_n##*/}
				[ "$_n" = lo ] && continue
				[ "$(bb cat "$NETSYS/$_n/carrier" 2>/dev/null)" = 1 ] && _d=$_n && break
			done
			[ -z "$_d" ] && bb usleep 100000
			_i=$((_i + 1))
		done
		[ -z "$_d" ] && _d=$_first
	fi
	echo "$_d"
}

# klibc ipconfig's first DHCP send on a down link fails and backs off 10 s: bring the link up and wait for it.
link_up() {
	bb ip link set "$1" up 2>/dev/null
	_i=0
	while [ "$_i" -lt 50 ]; do
		case $(bb cat "$NETSYS/$1/operstate" 2>/dev/null) in
		up) return 0 ;;
		unknown) [ "$(bb cat "$NETSYS/$1/carrier" 2>/dev/null)" = 1 ] && return 0 ;;
		esac
		bb usleep 100000
		_i=$((_i + 1))
	done
	return 1
}

find_ipconfig() {
	if [ -n "${RESCUE_IPCONFIG:-}" ]; then
		[ "$RESCUE_IPCONFIG" != none ] && echo "$RESCUE_IPCONFIG"
		return 0
	fi
	for _c in /bin/ipconfig /usr/lib/klibc/bin/ipconfig /lib/rescue/ipconfig; do
		[ -x "$_c" ] && echo "$_c" && return 0
	done
	command -v ipconfig 2>/dev/null
}

# Static configuration from an ip= value, with busybox ip when klibc ipconfig is not there.
static_ip() {
	_t=$(left)
	[ "$_t" -gt 0 ] || return 1
	_ipc=$(find_ipconfig)
	if [ -n "$_ipc" ]; then
		bb timeout "$_t" "$_ipc" -t "$_t" "ip=$1" >>"$WORKDIR/net.log" 2>&1 && return 0
	fi
	_c=$(ip_field "$1" 1)
	_g=$(ip_field "$1" 3)
	_m=$(ip_field "$1" 4)
	_dev=$(ip_field "$1" 6)
	[ -n "$_dev" ] || _dev=$NET_DEVICE
	[ -n "$_dev" ] && [ -n "$_c" ] || return 1
	bb ip link set "$_dev" up
	if [ -n "$_m" ]; then
		bb ifconfig "$_dev" "$_c" netmask "$_m" up || return 1
	else
		bb ip addr add "$_c/24" dev "$_dev" || return 1
	fi
	[ -n "$_g" ] && bb ip route add default via "$_g" dev "$_dev"
	printf 'DEVICE=%s\nIPV4ADDR=%s\nIPV4NETMASK=%s\nIPV4GATEWAY=%s\n' "$_dev" "$_c" "$_m" "$_g" >"$WORKDIR/net-$_dev.conf"
	return 0
}

dhcp_ipconfig() {
	_ipc=$(find_ipconfig)
	[ -n "$_ipc" ] || return 1
	_t=$(left)
	[ "$_t" -gt 10 ] && _t=10
	[ "$_t" -gt 0 ] || return 1
	bb timeout $((_t + 1)) "$_ipc" -t "$_t" "$1" >>"$WORKDIR/net.log" 2>&1
}

# busybox udhcpc configures nothing by itself: it runs this script (see udhcpc_event) for each event.
dhcp_udhcpc() {
	_t=$(left)
	[ "$_t" -gt 0 ] || return 1
	printf '#!/bin/sh\nexec %s %s __udhcpc "$@"\n' "${BB:-/bin/sh}${BB:+ sh}" "$SELF" >"$WORKDIR/udhcpc.sh"
	bb chmod 755 "$WORKDIR/udhcpc.sh"
	RESCUE_WORKDIR=$WORKDIR bb timeout "$_t" "${BB:-udhcpc}" ${BB:+udhcpc} -i "$1" -n -q -t 3 -T 1 \
		-s "$WORKDIR/udhcpc.sh" >>"$WORKDIR/net.log" 2>&1
}

udhcpc_event() {
	# shellcheck disable=SC2154  # interface, ip, mask, router, subnet come from udhcpc's environment
	case $1 in
	deconfig)
		bb ip addr flush dev "$interface" 2>/dev/null
		bb ip link set "$interface" up
		;;
	bound | renew)
		bb ip addr flush dev "$interface" 2>/dev/null
		bb ip addr add "$ip/${mask:-24}" dev "$interface"
		_gw=""
		for _r in $router; do
			_gw=$_r
			bb ip route add default via "$_r" dev "$interface" && break
		done
		printf 'DEVICE=%s\nIPV4ADDR=%s\nIPV4NETMASK=%s\nIPV4GATEWAY=%s\n' \
			"$interface" "$ip" "${subnet:-}" "$_gw" >"${RESCUE_WORKDIR:-/run/rescue}/net-$interface.conf"
		;;
	esac
	return 0
}

# Is there an address already? (ipconfig's /run/net-*.conf from the generator or an earlier run)
existing_net() {
	for _f in "$RUNDIR"/net-*.conf "$WORKDIR"/net-*.conf; do
		[ -f "$_f" ] || continue
		if bb grep -q '^IPV4ADDR=..*' "$_f"; then
			echo "$_f"
			return 0
		fi
	done
	return 1
}

net_up() {
	if [ "$RESCUE_IP" = none ]; then
		NET_METHOD="none (rescue.ip=none: the network is already configured)"
		return 0
	fi
	if _f=$(existing_net); then
		NET_METHOD="existing $_f"
		return 0
	fi
	NET_DEVICE=$(pick_device)
	_spec=""
	if [ -n "$RESCUE_IP" ] && [ "$RESCUE_IP" != dhcp ]; then
		_spec=$RESCUE_IP
	elif _ip=$(cmdline_arg ip) && ip_is_static "$_ip"; then
		_spec=$_ip
	fi
	if [ -n "$_spec" ]; then
		say "network: static $_spec"
		if static_ip "$_spec"; then
			NET_METHOD="static $_spec"
			return 0
		fi
	fi
	if [ -n "$NET_DEVICE" ]; then
		say "network: dhcp on $NET_DEVICE"
		link_up "$NET_DEVICE" || say "network: $NET_DEVICE has no link yet"
		if dhcp_ipconfig "$NET_DEVICE" && existing_net >/dev/null; then
			NET_METHOD="ipconfig $NET_DEVICE"
			return 0
		fi
		if dhcp_udhcpc "$NET_DEVICE" && existing_net >/dev/null; then
			NET_METHOD="udhcpc $NET_DEVICE"
			return 0
		fi
	fi
	# initramfs-tools' own function understands every ip=/BOOTIF/DEVICE form, but waits up to 180 s for a device
	# and retries with growing timeouts: last, and bounded.
	_t=$(left)
	if [ -r "$PREFIX/scripts/functions" ] && [ -z "$PREFIX" ] && [ "$_t" -gt 1 ]; then
		bb timeout "$_t" /bin/sh -c ". /scripts/functions && configure_networking" >>"$WORKDIR/net.log" 2>&1
		if existing_net >/dev/null; then
			NET_METHOD="configure_networking"
			return 0
		fi
	fi
	NET_METHOD="failed"
	return 1
}

write_network() {
	{
		echo "method=$NET_METHOD"
		echo "device=$NET_DEVICE"
		for _f in "$RUNDIR"/net-*.conf "$WORKDIR"/net-*.conf; do
			[ -f "$_f" ] || continue
			echo "--- $_f"
			bb cat "$_f"
		done
		echo "--- ip addr"
		bb ip addr 2>&1
		echo "--- ip route"
		bb ip route 2>&1
		if [ -s "$WORKDIR/net.log" ]; then
			echo "--- log"
			bb cat "$WORKDIR/net.log"
		fi
	} >"$BUNDLE/network.txt" 2>&1
}

