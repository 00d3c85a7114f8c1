#!/bin/sh
# rescue collector: runs inside the initramfs after the boot failed (initramfs-tools scripts/panic, dracut
# emergency hook, or any /init that calls it). Brings the network up, collects the evidence, checks the modules
# the root filesystem needs, and sends it all as one tar stream behind a `RESCUE/1` header line.
#
# Usage: /bin/sh /lib/rescue/collect.sh [REASON]
#
# POSIX sh for busybox ash. Best effort throughout: a missing tool or file costs one piece of evidence, never
# the send. It never runs longer than RESCUE_TIMEOUT and sends at most once per boot (panic() may run twice).
#
# Configuration, later wins: /etc/rescue.conf (KEY=value), the environment (RESCUE_HOST, RESCUE_PORT,
# RESCUE_TOKEN, RESCUE_IP, RESCUE_TIMEOUT), the kernel command line (rescue.host= rescue.port= rescue.token=
# rescue.ip= rescue.timeout= rescue=off).
# For tests and replays: RESCUE_PREFIX (a fake root for /proc, /sys, /lib/modules, /etc, /run, /dev/disk),
# RESCUE_DMESG / RESCUE_BLKID (files used instead of running dmesg / blkid), RESCUE_SYSNET (instead of
# $RESCUE_PREFIX/sys/class/net), RESCUE_RUNDIR (where ipconfig's net-*.conf appear, instead of
# $RESCUE_PREFIX/run), RESCUE_WORKDIR (instead of $RESCUE_PREFIX/run/rescue), RESCUE_IPCONFIG (the ipconfig
# binary, or "none").

RESCUE_VERSION=1
P=${RESCUE_PREFIX:-}

say() {
	echo "rescue: $*"
}

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

# Seconds left before the deadline (never negative).
left() {
	_l=$((DEADLINE - $(now)))
	[ "$_l" -gt 0 ] || _l=0
	echo "$_l"
}

# --- configuration -------------------------------------------------------------------------------------

CMDLINE=""
[ -r "$P/proc/cmdline" ] && CMDLINE=$(bb cat "$P/proc/cmdline")

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

load_config() {
	# The environment wins over the file: remember it before reading the file.
	_env_host=${RESCUE_HOST:-}
	_env_port=${RESCUE_PORT:-}
	_env_token=${RESCUE_TOKEN:-}
	_env_ip=${RESCUE_IP:-}
	_env_timeout=${RESCUE_TIMEOUT:-}
	RESCUE_HOST="" RESCUE_PORT=3333 RESCUE_TOKEN="" RESCUE_IP="" RESCUE_TIMEOUT=30
	if [ -r "$P/etc/rescue.conf" ]; then
		# Parsed, not sourced: only the known keys, and no code runs.
		while IFS='=' read -r _k _v; do
			_v=${_v#\"}
			_v=${_v%\"}
			_v=${_v#\'}
			_v=${_v%\'}
			case $_k in
			RESCUE_HOST) RESCUE_HOST=$_v ;;
			RESCUE_PORT) RESCUE_PORT=$_v ;;
			RESCUE_TOKEN) RESCUE_TOKEN=$_v ;;
			RESCUE_IP) RESCUE_IP=$_v ;;
			RESCUE_TIMEOUT) RESCUE_TIMEOUT=$_v ;;
			esac
		done <"$P/etc/rescue.conf"
	fi
	[ -n "$_env_host" ] && RESCUE_HOST=$_env_host
	[ -n "$_env_port" ] && RESCUE_PORT=$_env_port
	[ -n "$_env_token" ] && RESCUE_TOKEN=$_env_token
	[ -n "$_env_ip" ] && RESCUE_IP=$_env_ip
	[ -n "$_env_timeout" ] && RESCUE_TIMEOUT=$_env_timeout
	_v=$(cmdline_arg rescue.host) && RESCUE_HOST=$_v
	_v=$(cmdline_arg rescue.port) && RESCUE_PORT=$_v
	_v=$(cmdline_arg rescue.token) && RESCUE_TOKEN=$_v
	_v=$(cmdline_arg rescue.ip) && RESCUE_IP=$_v
	_v=$(cmdline_arg rescue.timeout) && RESCUE_TIMEOUT=$_v
	case $RESCUE_TIMEOUT in
	'' | *[!0-9]*) RESCUE_TIMEOUT=30 ;;
	esac
	case $RESCUE_PORT in
	'' | *[!0-9]*) RESCUE_PORT=3333 ;;
	esac
}

# Secrets never leave the machine: values of *pass*/*token*/*secret* parameters (rescue.token=,
# rd.iscsi.password=, iscsi_password=, ...) and passwords in URLs (cifs://user:password@host/share).
mask() {
	bb sed -E \
		-e 's/([A-Za-z0-9_.-]*([Pp][Aa][Ss][Ss]|[Tt][Oo][Kk][Ee][Nn]|[Ss][Ee][Cc][Rr][Ee][Tt])[A-Za-z0-9_.-]*)=[^ ,]*/\1=***/g' \
		-e 's#(://[^:/@ ]*):[^@/ ]*@#\1:***@#g'
}

# --- network --------------------------------------------------------------------------------------------

NETSYS=${RESCUE_SYSNET:-$P/sys/class/net}
RUNDIR=${RESCUE_RUNDIR:-$P/run}
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
		bb timeout "$_t" "$_ipc" -t "$_t" "ip=$1" >>"$W/net.log" 2>&1 && return 0
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
	printf 'DEVICE=%s\nIPV4ADDR=%s\nIPV4NETMASK=%s\nIPV4GATEWAY=%s\n' "$_dev" "$_c" "$_m" "$_g" >"$W/net-$_dev.conf"
	return 0
}

dhcp_ipconfig() {
	_ipc=$(find_ipconfig)
	[ -n "$_ipc" ] || return 1
	_t=$(left)
	[ "$_t" -gt 10 ] && _t=10
	[ "$_t" -gt 0 ] || return 1
	bb timeout $((_t + 1)) "$_ipc" -t "$_t" "$1" >>"$W/net.log" 2>&1
}

# busybox udhcpc configures nothing by itself: it runs this script (see udhcpc_event) for each event.
dhcp_udhcpc() {
	_t=$(left)
	[ "$_t" -gt 0 ] || return 1
	printf '#!/bin/sh\nexec %s %s __udhcpc "$@"\n' "${BB:-/bin/sh}${BB:+ sh}" "$SELF" >"$W/udhcpc.sh"
	bb chmod 755 "$W/udhcpc.sh"
	RESCUE_WORKDIR=$W bb timeout "$_t" "${BB:-udhcpc}" ${BB:+udhcpc} -i "$1" -n -q -t 3 -T 1 \
		-s "$W/udhcpc.sh" >>"$W/net.log" 2>&1
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
	for _f in "$RUNDIR"/net-*.conf "$W"/net-*.conf; do
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
	if [ -r "$P/scripts/functions" ] && [ -z "$P" ] && [ "$_t" -gt 1 ]; then
		bb timeout "$_t" /bin/sh -c ". /scripts/functions && configure_networking" >>"$W/net.log" 2>&1
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
		for _f in "$RUNDIR"/net-*.conf "$W"/net-*.conf; do
			[ -f "$_f" ] || continue
			echo "--- $_f"
			bb cat "$_f"
		done
		echo "--- ip addr"
		bb ip addr 2>&1
		echo "--- ip route"
		bb ip route 2>&1
		if [ -s "$W/net.log" ]; then
			echo "--- log"
			bb cat "$W/net.log"
		fi
	} >"$B/network.txt" 2>&1
}

# --- module check ---------------------------------------------------------------------------------------
# One awk program walks the closure (each process costs milliseconds under qemu TCG, so no per-module greps).
# busybox modprobe ignores softdeps, so the walk is ours: modules.dep and modules.softdep, aliases from
# modules.alias and modules.builtin.modinfo (built-in aliases live only there), /proc/modules, the files that
# are really in the image, and each .ko's own depends= (depmod on a trimmed image forgets what is not there).

# The module's own modinfo record for KEY (depends, softdep, ...): the .ko remembers what depmod dropped.
ko_info() {
	_f="$MODDIR/$1"
	[ -f "$_f" ] || return 0
	# strings, not tr | sed: under qemu TCG the byte-wise pipeline took seconds for btrfs.ko's 3.8 MB.
	case $_f in
	*.xz) bb xzcat "$_f" | bb strings -n 8 ;;
	*.gz) bb zcat "$_f" | bb strings -n 8 ;;
	*.zst) command -v zstdcat >/dev/null && zstdcat "$_f" | bb strings -n 8 ;;
	*) bb strings -n 8 "$_f" ;;
	esac 2>/dev/null | bb sed -n "s/^$2=//p"
}

# An input file for the walk, or an empty stand-in (awk stops at a file it cannot open).
walk_input() {
	if [ -r "$1" ]; then
		echo "$1"
	else
		: >"$W/empty.$2"
		echo "$W/empty.$2"
	fi
}

walk_modules() {
	bb awk -v ROOTFS="${1%% *}" -v CSUM="${1#* }" -v FSTYPE="$2" -v SOURCE="$3" -v OUT="$W/modcheck.new" -v DEPOUT="$W/modules-dep.new" \
		-v FOLLOW="$W/follow" -v DEP="$4" -v SOFT="$5" -v ALIAS="$6" -v BUILTIN="$7" -v BINFO="$8" \
		-v LOADED="$9" -v FILES="${10}" -v KODEPS="${11}" -v CRYPTO="${12}" '
function norm(s) { gsub("-", "_", s); return s }
function base(p, b) { b = p; sub(/.*\//, "", b); sub(/[.]ko.*$/, "", b); return norm(b) }
function known(m) { return (m in loaded) || (m in builtin) || (m in path) }
function status(m) {
	if (m in loaded) return "loaded"
	if (m in builtin) return "builtin"
	if ((m in path) && (path[m] in have)) return "available"
	return "missing"
}
function rank(s) { return s == "loaded" ? 1 : s == "builtin" ? 2 : s == "available" ? 3 : 4 }
function glob2re(g, r) { r = g; gsub(/[.]/, "[.]", r); gsub(/[*]/, ".*", r); gsub(/[?]/, ".", r); return "^" r "$" }
function providers(a, r, i) {
	if (a in exact) return exact[a]
	r = ""
	for (i = 1; i <= nw; i++) if (a ~ glob2re(wild[i])) r = r " " wildm[i]
	return r
}
function add(name, kind, parent) { qn++; q[qn] = name; qk[qn] = kind; qp[qn] = parent }
function addcrypto(c) { if (!(c in cseen)) { cseen[c] = 1; cn++; clist[cn] = c } }
FILENAME == DEP { i = index($0, ":"); if (i == 0) next; p = substr($0, 1, i - 1); m = base(p)
	path[m] = p; deps[m] = substr($0, i + 1); depline[m] = $0; next }
FILENAME == SOFT { if ($1 == "softdep") { m = norm($2); softline[m] = softline[m] $0 "\n"
	for (i = 3; i <= NF; i++) if ($i != "pre:" && $i != "post:") soft[m] = soft[m] " " $i }; next }
FILENAME == ALIAS { if ($1 == "alias" && NF == 3) { if ($2 ~ /[*?[]/) { nw++; wild[nw] = $2; wildm[nw] = norm($3) }
	else exact[$2] = exact[$2] " " norm($3) }; next }
FILENAME == BUILTIN { if ($0 != "") builtin[base($0)] = 1; next }
FILENAME == BINFO { i = index($0, "."); m = norm(substr($0, 1, i - 1)); rest = substr($0, i + 1)
	if (rest ~ /^alias=/) { a = substr(rest, 7); exact[a] = exact[a] " " m }
	else if (rest ~ /^softdep=/) { softline[m] = softline[m] "# built-in " $0 "\n"; n = split(substr(rest, 9), w, " ")
		for (j = 1; j <= n; j++) if (w[j] != "pre:" && w[j] != "post:") soft[m] = soft[m] " " w[j] }
	next }
FILENAME == LOADED { loaded[norm($1)] = 1; next }
FILENAME == FILES { have[$0] = 1; next }
FILENAME == KODEPS { kod[$1] = $2; next }
FILENAME == CRYPTO { if ($1 == "name") cname = $3; else if ($1 == "driver" && !(cname in cdrv)) cdrv[cname] = $3; next }
END {
	printf "" > DEPOUT
	printf "" > FOLLOW
	print "# rescue modcheck 1" > OUT
	print "fstype " FSTYPE " source=" SOURCE > OUT
	if (ROOTFS == "") {
		print "# the root filesystem type is unknown: no modules checked" > OUT
		print "result ok" > OUT
		exit
	}
	root = norm(ROOTFS)
	if (!known(root)) { n = split(providers("fs-" ROOTFS), w, " "); if (n > 0) root = w[1] }
	qn = 0; qi = 0; missing = ""
	add(root, "root", "-")
	while (qi < qn) {
		qi++; name = q[qi]
		if (name in seen) continue
		seen[name] = 1
		prov = ""; follow = ""
		if (known(norm(name))) { st = status(norm(name)); follow = norm(name) }
		else {
			st = "missing"; n = split(providers(name), w, " ")
			for (j = 1; j <= n; j++) { s = status(w[j]); if (prov == "" || rank(s) < rank(st)) { st = s; prov = w[j] } }
			if (st != "missing") follow = prov
			if (name ~ /^crypto-/) addcrypto(substr(name, 8)); else if (qk[qi] == "softdep") addcrypto(name)
		}
		print "need " name " " qk[qi] " " qp[qi] " " st (prov != "" ? " " prov : "") > OUT
		# A missing softdep fails the check when it is crc32c (the default checksum of btrfs and ext4) or
		# the checksum the root filesystem uses; the other checksum modules only matter to other filesystems.
		if (st == "missing" && (qk[qi] != "softdep" || name ~ /^(crypto-)?crc32c$/ || \
			(CSUM != "" && (name == CSUM || name == "crypto-" CSUM))))
			missing = missing (missing == "" ? "" : ",") name
		else if (st == "missing") optional = optional (optional == "" ? "" : ",") name
		if (follow == "") continue
		if (follow in path) {
			p = path[follow]
			print depline[follow] > DEPOUT
			if (p in kod) print "# " p " depends=" kod[p] > DEPOUT
			else if (p in have) print p > FOLLOW
			n = split(deps[follow], w, " "); for (j = 1; j <= n; j++) add(base(w[j]), "dep", follow)
			if (p in kod) { n = split(kod[p], w, ","); for (j = 1; j <= n; j++) if (w[j] != "") add(norm(w[j]), "dep", follow) }
		}
		if (follow in softline) printf "%s", softline[follow] > DEPOUT
		n = split(soft[follow], w, " "); for (j = 1; j <= n; j++) add(w[j], "softdep", follow)
	}
	# btrfs needs crc32c whatever provides it (a library, not a crypto module, on kernels >= 6.14).
	if (FSTYPE == "btrfs") addcrypto("crc32c")
	for (j = 1; j <= cn; j++) {
		c = clist[j]
		if (c in cdrv) print "crypto " c " present driver=" cdrv[c] > OUT
		else print "crypto " c " absent" > OUT
	}
	if (CSUM != "") print "# btrfs checksum: " CSUM > OUT
	if (optional != "") print "# missing, needed only by filesystems that use them: " optional > OUT
	print (missing == "" ? "result ok" : "result fail missing=" missing) > OUT
}' "$4" "$5" "$6" "$7" "$8" "$9" "${10}" "${11}" "${12}"
}

# The root filesystem type and where it came from.
root_fstype() {
	if [ -n "${ROOTFSTYPE:-}" ] && [ "$ROOTFSTYPE" != auto ]; then
		echo "$ROOTFSTYPE ROOTFSTYPE"
		return
	fi
	if _t=$(cmdline_arg rootfstype) && [ -n "$_t" ]; then
		echo "$_t cmdline"
		return
	fi
	_t=$(root_blkid_line | bb sed -n 's/.* TYPE="\([^"]*\)".*/\1/p')
	if [ -n "$_t" ]; then
		echo "$_t blkid"
		return
	fi
	if bb grep -q 'TYPE="btrfs"' "$B/blkid.txt" 2>/dev/null; then
		echo "btrfs signature"
		return
	fi
	echo "unknown none"
}

root_spec() {
	_root=${ROOT:-}
	[ -n "$_root" ] || _root=$(cmdline_arg root) || _root=""
	echo "${_root#block:}"
}

# blkid's line for the root device (ROOT=, else root= on the command line).
root_blkid_line() {
	_root=$(root_spec)
	[ -n "$_root" ] && [ -s "$B/blkid.txt" ] || return 0
	case $_root in
	UUID=* | LABEL=* | PARTUUID=* | PARTLABEL=*)
		bb grep -F " ${_root%%=*}=\"${_root#*=}\"" "$B/blkid.txt" | bb head -n 1
		;;
	*) bb grep -F "$_root:" "$B/blkid.txt" | bb head -n 1 ;;
	esac
}

# Whether the root device is there: "SPEC present", "SPEC missing", or nothing when it cannot be told
# (no root= at all, or a network or pool root such as nfs or ZFS=). initramfs-tools prints its
# "ALERT! ... does not exist" on the console only, so the bundle has to say it itself.
root_device_state() {
	_root=$(root_spec)
	case $_root in
	/dev/nfs) ;; # the kernel's name for an NFS root, never a device node
	/dev/*)
		_name=${_root#/dev/}
		if [ -e "$P$_root" ] || bb grep -qE "[[:space:]]${_name}\$" "$B/partitions.txt" 2>/dev/null ||
			bb grep -qF "$_root:" "$B/blkid.txt" 2>/dev/null; then
			echo "$_root present"
		else
			echo "$_root missing"
		fi
		;;
	UUID=* | LABEL=* | PARTUUID=* | PARTLABEL=*)
		_by=$(echo "${_root%%=*}" | bb tr 'A-Z' 'a-z')
		if [ -n "$(root_blkid_line)" ] || [ -e "$P/dev/disk/by-$_by/${_root#*=}" ]; then
			echo "$_root present"
		else
			echo "$_root missing"
		fi
		;;
	esac
}

# The checksum algorithm of a btrfs root (superblock at 64 KiB, csum_type at byte 196): btrfs needs the
# module for it, while the other checksum softdeps are optional.
btrfs_csum() {
	_dev=$(root_blkid_line)
	_dev=${_dev%%:*}
	[ -n "$_dev" ] || _dev=$(bb grep 'TYPE="btrfs"' "$B/blkid.txt" 2>/dev/null | bb head -n 1 | bb cut -d: -f1)
	[ -n "$_dev" ] || return 0
	case $(bb timeout 5 ${BB:+"$BB"} dd if="$P$_dev" bs=1 skip=65732 count=2 2>/dev/null | bb od -An -tu2 | bb tr -d ' ') in
	0) echo crc32c ;;
	1) echo xxhash64 ;;
	2) echo sha256 ;;
	3) echo blake2b-256 ;;
	esac
}

# Write modcheck.txt and modules-dep.txt for the root filesystem, and show them on the console.
modcheck() {
	_r=$(root_fstype)
	_fstype=${_r%% *}
	_source=${_r#* }
	_rootfs=$_fstype
	[ "$_fstype" = unknown ] && _rootfs=""
	_csum=""
	[ "$_fstype" = btrfs ] && _csum=$(btrfs_csum)
	bb tr '\0' '\n' <"$MODDIR/modules.builtin.modinfo" 2>/dev/null | bb grep -E '^[^.]+[.](alias|softdep)=' \
		>"$W/builtin.info"
	: >"$W/kodeps"
	_pass=0
	# Each pass may follow modules whose .ko says more than modules.dep; read those and walk again.
	while [ "$_pass" -lt 4 ]; do
		_pass=$((_pass + 1))
		walk_modules "$_rootfs $_csum" "$_fstype" "$_source" "$(walk_input "$MODDIR/modules.dep" dep)" \
			"$(walk_input "$MODDIR/modules.softdep" softdep)" "$(walk_input "$MODDIR/modules.alias" alias)" \
			"$(walk_input "$MODDIR/modules.builtin" builtin)" "$W/builtin.info" \
			"$(walk_input "$P/proc/modules" modules)" "$B/initramfs-modules.txt" "$W/kodeps" \
			"$(walk_input "$P/proc/crypto" crypto)"
		[ -s "$W/follow" ] || break
		while read -r _p; do
			echo "$_p $(ko_info "$_p" depends)" >>"$W/kodeps"
		done <"$W/follow"
	done
	_rootdev=$(root_device_state)
	if [ -n "$_rootdev" ]; then
		# Before the last line: "result ..." stays last.
		{ bb sed '$d' "$W/modcheck.new"; echo "rootdev $_rootdev"; bb tail -n 1 "$W/modcheck.new"; } >"$W/modcheck.tmp"
		bb mv "$W/modcheck.tmp" "$W/modcheck.new"
	fi
	bb mv "$W/modcheck.new" "$B/modcheck.txt"
	bb mv "$W/modules-dep.new" "$B/modules-dep.txt"
	while read -r _line; do
		case $_line in
		'#'*) ;;
		*) say "$_line" ;;
		esac
	done <"$B/modcheck.txt"
}

# blkid output: util-linux blkid when the image has it (busybox-static has no blkid applet), else a probe of
# each partition with klibc fstype or, for btrfs, its superblock magic.
blkid_lines() {
	if [ -n "${RESCUE_BLKID:-}" ] && [ "$RESCUE_BLKID" != probe ]; then
		bb cat "$RESCUE_BLKID"
		return
	fi
	_devs=$(bb awk 'NR > 2 && NF == 4 { print "/dev/" $4 }' "$P/proc/partitions" 2>/dev/null)
	if [ -z "${RESCUE_BLKID:-}" ]; then
		for _c in /sbin/blkid /usr/sbin/blkid /bin/blkid /usr/bin/blkid; do
			if [ -x "$_c" ]; then
				# Only the devices of /proc/partitions: plain `blkid` also opens removable drives, and an
				# empty emulated CD drive cost seconds under qemu. A dying disk can hold a probe in the
				# kernel for minutes: bounded.
				# shellcheck disable=SC2086  # one device per word
				bb timeout 10 "$_c" $_devs
				return
			fi
		done
	fi
	_fstype=""
	for _c in /bin/fstype /usr/lib/klibc/bin/fstype; do
		[ -x "$_c" ] && _fstype=$_c && break
	done
	echo "# probed (no blkid here)"
	for _d in $_devs; do
		[ -e "$P$_d" ] || continue
		_t=""
		[ -n "$_fstype" ] && _t=$(bb timeout 5 "$_fstype" "$P$_d" 2>/dev/null | bb sed -n 's/^FSTYPE=//p')
		if [ -z "$_t" ] || [ "$_t" = unknown ]; then
			[ "$(bb timeout 5 ${BB:+"$BB"} dd if="$P$_d" bs=1 skip=65600 count=8 2>/dev/null)" = _BHRfS_M ] && _t=btrfs
		fi
		[ -n "$_t" ] && [ "$_t" != unknown ] && echo "$_d: TYPE=\"$_t\""
	done
}

# --- collect --------------------------------------------------------------------------------------------

first_line() {
	bb head -n 1 "$1" 2>/dev/null
}

detect_generator() {
	if [ -n "${RESCUE_GENERATOR:-}" ]; then
		echo "$RESCUE_GENERATOR"
	elif [ -e "$P/scripts/functions" ]; then
		echo initramfs-tools
	elif [ -e "$P/lib/dracut-lib.sh" ] || [ -d "$P/lib/dracut" ]; then
		echo dracut
	else
		echo custom
	fi
}

collect() {
	if [ -n "${RESCUE_DMESG:-}" ]; then
		bb cat "$RESCUE_DMESG"
	else
		bb dmesg -r 2>/dev/null || bb dmesg
	fi 2>&1 | mask >"$B/dmesg.txt"
	echo "$CMDLINE" | mask >"$B/cmdline.txt"
	bb cat "$P/proc/modules" >"$B/modules.txt" 2>&1
	bb cat "$P/proc/crypto" >"$B/crypto.txt" 2>&1
	bb cat "$P/proc/filesystems" >"$B/filesystems.txt" 2>&1
	bb cat "$P/proc/partitions" >"$B/partitions.txt" 2>&1
	bb cat "$P/proc/mounts" 2>&1 | mask >"$B/mounts.txt"
	blkid_lines >"$B/blkid.txt" 2>&1
	bb ls -l "$P"/dev/disk/by-* >"$B/disks.txt" 2>&1
	if [ -d "$MODDIR" ]; then
		(cd "$MODDIR" && bb find . -name '*.ko*' | bb sed 's#^[.]/##' | bb sort) >"$B/initramfs-modules.txt"
	else
		echo "# no $MODDIR" >"$B/initramfs-modules.txt"
	fi
	_root=${ROOT:-}
	[ -n "$_root" ] || _root=$(cmdline_arg root) || _root=""
	_flags=${ROOTFLAGS:-}
	[ -n "$_flags" ] || _flags=$(cmdline_arg rootflags) || _flags=""
	{
		echo "KERNEL=$KERNEL"
		echo "HOSTNAME=$HOSTNAME_"
		echo "BOOT_ID=$BOOT_ID"
		echo "GENERATOR=$(detect_generator)"
		echo "ROOT=$_root"
		echo "ROOTFSTYPE=${ROOTFSTYPE:-}"
		echo "ROOTFLAGS=$_flags"
		echo "REASON=$REASON"
		echo "RESCUE_VERSION=$RESCUE_VERSION"
	} | mask >"$B/info.txt"
}

checksums() {
	(
		cd "$B" || exit 1
		bb rm -f SHA256SUMS
		# shellcheck disable=SC2035  # the bundle's own names: no leading dashes
		bb sha256sum *.txt >SHA256SUMS.tmp && bb mv SHA256SUMS.tmp SHA256SUMS
	)
}

# --- send -----------------------------------------------------------------------------------------------

header_value() {
	echo "$1" | bb tr ' \t' '__'
}

send() {
	_hdr="RESCUE/1 name=bundle host=$(header_value "$HOSTNAME_") kernel=$(header_value "$KERNEL")"
	_hdr="$_hdr boot=$(header_value "$BOOT_ID")"
	[ -n "$RESCUE_TOKEN" ] && _hdr="$_hdr token=$(header_value "$RESCUE_TOKEN")"
	{
		echo "$_hdr"
		(cd "$B" && bb tar -cf - dmesg.txt cmdline.txt modules.txt crypto.txt filesystems.txt partitions.txt \
			mounts.txt blkid.txt disks.txt info.txt initramfs-modules.txt modules-dep.txt network.txt \
			modcheck.txt SHA256SUMS)
	} >"$W/payload"
	_bytes=$(bb wc -c <"$W/payload")
	_bytes=$((_bytes + 0))
	_try=0
	_err=""
	while :; do
		_try=$((_try + 1))
		_t=$(left)
		if [ "$_t" -le 0 ]; then
			_err="${_err:-no time left} (after $((_try - 1)) attempts)"
			break
		fi
		# busybox nc half-closes at EOF and waits for the listener to close: bound it.
		bb timeout "$_t" "${BB:-nc}" ${BB:+nc} -w 3 "$RESCUE_HOST" "$RESCUE_PORT" <"$W/payload" \
			>/dev/null 2>"$W/nc.err"
		_rc=$?
		if [ "$_rc" = 0 ]; then
			say "sent $_bytes bytes to $RESCUE_HOST:$RESCUE_PORT"
			echo "$RESCUE_HOST:$RESCUE_PORT $_bytes" >"$SENT"
			return 0
		fi
		_err=$(bb tail -n 1 "$W/nc.err" 2>/dev/null)
		[ -n "$_err" ] || _err="nc exit status $_rc"
		# A listener that is not up yet (or a route still settling): wait a little, then try again.
		if [ "$(left)" -le 1 ]; then
			_err="$_err (after $_try attempts)"
			break
		fi
		bb sleep 1
	done
	say "send failed: $RESCUE_HOST:$RESCUE_PORT: $_err"
	return 1
}

# --- main -----------------------------------------------------------------------------------------------

SELF=$0
if [ "${1:-}" = __udhcpc ]; then
	shift
	udhcpc_event "$@"
	exit 0
fi

REASON=${1:-${REASON:-unknown}}
load_config
if [ "$(cmdline_arg rescue)" = off ]; then
	say "disabled (rescue=off)"
	exit 0
fi
DEADLINE=$(($(now) + RESCUE_TIMEOUT))

W=${RESCUE_WORKDIR:-$P/run/rescue}
B=$W/bundle
bb mkdir -p "$W" || exit 1
# panic() may run more than once: send once per boot and reason (rescue.always=1 sends before the mount,
# the panic script after it fails; both are worth having).
SENT=$W/sent-$(echo "$REASON" | bb tr -c 'A-Za-z0-9_.\n-' '_')
if [ -f "$SENT" ]; then
	say "evidence already sent ($REASON) to $(bb cat "$SENT") bytes; not sending again"
	exit 0
fi
if ! bb mkdir "$W/lock" 2>/dev/null; then
	# A collector that was killed leaves its lock behind: take it over when its process is gone.
	_pid=$(bb cat "$W/lock/pid" 2>/dev/null)
	if [ -n "$_pid" ] && kill -0 "$_pid" 2>/dev/null; then
		say "another collector is running (pid $_pid); not starting a second one"
		exit 0
	fi
	bb rm -rf "$W/lock"
	bb mkdir "$W/lock" || exit 1
fi
echo "$$" >"$W/lock/pid"
# The hard bound: whatever hangs (a probe of a dying disk, a stuck tool), the shell gets its console back.
# The work runs in a background subshell because `wait` returns on a signal, while a foreground pipeline
# would keep the trap from running until the hung command ends.
(
	# /dev/null: an orphaned sleep must not hold the console (or a caller's pipe) open after we exit.
	bb sleep $((RESCUE_TIMEOUT + 5)) </dev/null >/dev/null 2>&1
	say "timed out after $((RESCUE_TIMEOUT + 5)) s; giving up"
	kill -TERM $$
) &
WATCHDOG=$!
WORK=""

# Every process below PID (from /proc/*/stat: "pid (comm) state ppid ..."), so that nothing of a hung
# pipeline stays behind holding the console.
descendants() {
	bb cat /proc/[0-9]*/stat 2>/dev/null | bb awk -v root="$1" '
		{ line = $0; sub(/^.*\) /, "", line); split(line, f, " "); parent[$1] = f[2] }
		END {
			n = 1; q[1] = root
			for (i = 1; i <= n; i++) for (p in parent) if (parent[p] == q[i]) { n++; q[n] = p; print p }
		}'
}

stop_work() {
	[ -n "$WORK" ] || return 0
	# shellcheck disable=SC2046  # one pid per word
	kill $(descendants "$WORK") "$WORK" 2>/dev/null
}

# Numbers, not names: klibc's sh (initramfs-tools with BUSYBOX=n) knows no EXIT.
trap 'kill "$WATCHDOG" 2>/dev/null; bb rm -rf "$W/lock"' 0
trap 'stop_work; exit 1' 1 2 15

main() {
	bb rm -rf "$B"
	bb mkdir -p "$B"
	KERNEL=$(first_line "$P/proc/sys/kernel/osrelease")
	[ -n "$KERNEL" ] || KERNEL=$(bb uname -r)
	HOSTNAME_=$(first_line "$P/proc/sys/kernel/hostname")
	[ -n "$HOSTNAME_" ] || HOSTNAME_=$(bb hostname 2>/dev/null)
	BOOT_ID=$(first_line "$P/proc/sys/kernel/random/boot_id")
	MODDIR=$P/lib/modules/$KERNEL

	say "collecting evidence (reason: $REASON)"
	collect
	modcheck
	if [ -z "$RESCUE_HOST" ]; then
		NET_METHOD="not attempted (no host configured)"
		write_network
		checksums
		say "send failed: no host configured (set rescue.host= on the kernel command line)"
		return 1
	fi
	if ! net_up; then
		say "network: no address (see network.txt); trying to send anyway"
	fi
	write_network
	checksums
	send
}

# The subshell's own traps: the defaults (TERM ends it), not the parent's.
(
	trap - 0 1 2 15
	main
) &
WORK=$!
wait "$WORK"
