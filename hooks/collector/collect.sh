#!/bin/sh
# rescue collector: runs inside the initramfs after the boot failed (initramfs-tools scripts/panic, dracut
# emergency hook, or any /init that calls it). Brings the network up, collects the evidence, checks the modules
# the root filesystem needs, and sends it all as one tar stream behind a `RESCUE/1` header line.
#
# Usage: /bin/sh /lib/rescue/collect.sh [REASON]   (net.sh and modcheck.awk beside it)
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
PREFIX=${RESCUE_PREFIX:-}  # a fake root, for tests
# The collector's other files (net.sh, modcheck.awk) lie beside it: hooks/collector/ is the one list.
LIB=${0%/*}
[ "$LIB" != "$0" ] || LIB=.
# shellcheck source=conf.sh source-path=SCRIPTDIR
. "$LIB/conf.sh"
# shellcheck source=base.sh source-path=SCRIPTDIR
. "$LIB/base.sh"

say() {
	echo "rescue: $*"
}

# --- configuration -------------------------------------------------------------------------------------

load_config() {
	# The environment wins over the file: remember it before reading the file.
	_env_host=${RESCUE_HOST:-}
	_env_port=${RESCUE_PORT:-}
	_env_token=${RESCUE_TOKEN:-}
	_env_ip=${RESCUE_IP:-}
	_env_timeout=${RESCUE_TIMEOUT:-}
	RESCUE_HOST="" RESCUE_PORT=3333 RESCUE_TOKEN="" RESCUE_IP="" RESCUE_TIMEOUT=30 RESCUE_HOSTNAME=""
	# Parsed, not sourced: only the known keys, and no code runs. RESCUE_HOSTNAME is baked in at build time.
	conf_read "$PREFIX/etc/rescue.conf" RESCUE_HOST RESCUE_PORT RESCUE_TOKEN RESCUE_IP RESCUE_TIMEOUT \
		RESCUE_HOSTNAME
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

# shellcheck source=net.sh source-path=SCRIPTDIR
. "$LIB/net.sh"
# shellcheck source=identity.sh source-path=SCRIPTDIR
. "$LIB/identity.sh"
# shellcheck source=evidence.sh source-path=SCRIPTDIR
. "$LIB/evidence.sh"

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
		: >"$WORKDIR/empty.$2"
		echo "$WORKDIR/empty.$2"
	fi
}

walk_modules() {
	bb awk -f "$LIB/modcheck.awk" -v ROOTFS="${1%% *}" -v CSUM="${1#* }" -v FSTYPE="$2" -v SOURCE="$3" \
		-v OUT="$WORKDIR/modcheck.new" -v DEPOUT="$WORKDIR/modules-dep.new" -v FOLLOW="$WORKDIR/follow" \
		-v DEP="$4" -v SOFT="$5" -v ALIAS="$6" -v BUILTIN="$7" -v BINFO="$8" -v LOADED="$9" -v FILES="${10}" \
		-v KODEPS="${11}" -v CRYPTO="${12}" "$4" "$5" "$6" "$7" "$8" "$9" "${10}" "${11}" "${12}"
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
	if bb grep -q 'TYPE="btrfs"' "$BUNDLE/blkid.txt" 2>/dev/null; then
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
	[ -n "$_root" ] && [ -s "$BUNDLE/blkid.txt" ] || return 0
	case $_root in
	UUID=* | LABEL=* | PARTUUID=* | PARTLABEL=*)
		bb grep -F " ${_root%%=*}=\"${_root#*=}\"" "$BUNDLE/blkid.txt" | bb head -n 1
		;;
	*) bb grep -F "$_root:" "$BUNDLE/blkid.txt" | bb head -n 1 ;;
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
		if [ -e "$PREFIX$_root" ] || bb grep -qE "[[:space:]]${_name}\$" "$BUNDLE/partitions.txt" 2>/dev/null ||
			bb grep -qF "$_root:" "$BUNDLE/blkid.txt" 2>/dev/null; then
			echo "$_root present"
		else
			echo "$_root missing"
		fi
		;;
	UUID=* | LABEL=* | PARTUUID=* | PARTLABEL=*)
		_by=$(echo "${_root%%=*}" | bb tr 'A-Z' 'a-z')
		if [ -n "$(root_blkid_line)" ] || [ -e "$PREFIX/dev/disk/by-$_by/${_root#*=}" ]; then
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
	[ -n "$_dev" ] || _dev=$(bb grep 'TYPE="btrfs"' "$BUNDLE/blkid.txt" 2>/dev/null | bb head -n 1 | bb cut -d: -f1)
	[ -n "$_dev" ] || return 0
	case $(bb timeout 5 ${BB:+"$BB"} dd if="$PREFIX$_dev" bs=1 skip=65732 count=2 2>/dev/null | bb od -An -tu2 | bb tr -d ' ') in
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
		>"$WORKDIR/builtin.info"
	: >"$WORKDIR/kodeps"
	_pass=0
	# Each pass may follow modules whose .ko says more than modules.dep; read those and walk again.
	while [ "$_pass" -lt 4 ]; do
		_pass=$((_pass + 1))
		walk_modules "$_rootfs $_csum" "$_fstype" "$_source" "$(walk_input "$MODDIR/modules.dep" dep)" \
			"$(walk_input "$MODDIR/modules.softdep" softdep)" "$(walk_input "$MODDIR/modules.alias" alias)" \
			"$(walk_input "$MODDIR/modules.builtin" builtin)" "$WORKDIR/builtin.info" \
			"$(walk_input "$PREFIX/proc/modules" modules)" "$BUNDLE/initramfs-modules.txt" "$WORKDIR/kodeps" \
			"$(walk_input "$PREFIX/proc/crypto" crypto)"
		[ -s "$WORKDIR/follow" ] || break
		while read -r _p; do
			echo "$_p $(ko_info "$_p" depends)" >>"$WORKDIR/kodeps"
		done <"$WORKDIR/follow"
	done
	_rootdev=$(root_device_state)
	if [ -n "$_rootdev" ]; then
		# Before the last line: "result ..." stays last.
		{ bb sed '$d' "$WORKDIR/modcheck.new"; echo "rootdev $_rootdev"; bb tail -n 1 "$WORKDIR/modcheck.new"; } >"$WORKDIR/modcheck.tmp"
		bb mv "$WORKDIR/modcheck.tmp" "$WORKDIR/modcheck.new"
	fi
	bb mv "$WORKDIR/modcheck.new" "$BUNDLE/modcheck.txt"
	bb mv "$WORKDIR/modules-dep.new" "$BUNDLE/modules-dep.txt"
	while read -r _line; do
		case $_line in
		'#'*) ;;
		*) say "$_line" ;;
		esac
	done <"$BUNDLE/modcheck.txt"
}

# blkid output: util-linux blkid when the image has it (busybox-static has no blkid applet), else a probe of
# each partition with klibc fstype or, for btrfs, its superblock magic.
blkid_lines() {
	if [ -n "${RESCUE_BLKID:-}" ] && [ "$RESCUE_BLKID" != probe ]; then
		bb cat "$RESCUE_BLKID"
		return
	fi
	_devs=$(bb awk 'NR > 2 && NF == 4 { print "/dev/" $4 }' "$PREFIX/proc/partitions" 2>/dev/null)
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
		[ -e "$PREFIX$_d" ] || continue
		_t=""
		[ -n "$_fstype" ] && _t=$(bb timeout 5 "$_fstype" "$PREFIX$_d" 2>/dev/null | bb sed -n 's/^FSTYPE=//p')
		if [ -z "$_t" ] || [ "$_t" = unknown ]; then
			[ "$(bb timeout 5 ${BB:+"$BB"} dd if="$PREFIX$_d" bs=1 skip=65600 count=8 2>/dev/null)" = _BHRfS_M ] && _t=btrfs
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
	elif [ -e "$PREFIX/scripts/functions" ]; then
		echo initramfs-tools
	elif [ -e "$PREFIX/lib/dracut-lib.sh" ] || [ -d "$PREFIX/lib/dracut" ]; then
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
	fi 2>&1 | mask >"$BUNDLE/dmesg.txt"
	echo "$CMDLINE" | mask >"$BUNDLE/cmdline.txt"
	bb cat "$PREFIX/proc/modules" >"$BUNDLE/modules.txt" 2>&1
	bb cat "$PREFIX/proc/crypto" >"$BUNDLE/crypto.txt" 2>&1
	bb cat "$PREFIX/proc/filesystems" >"$BUNDLE/filesystems.txt" 2>&1
	bb cat "$PREFIX/proc/partitions" >"$BUNDLE/partitions.txt" 2>&1
	bb cat "$PREFIX/proc/mounts" 2>&1 | mask >"$BUNDLE/mounts.txt"
	blkid_lines >"$BUNDLE/blkid.txt" 2>&1
	bb ls -l "$PREFIX"/dev/disk/by-* >"$BUNDLE/disks.txt" 2>&1
	# What netconsole.sh did this boot (armed, or why not), when rescue.netconsole=1 asked for it.
	[ -f "$WORKDIR/netconsole.txt" ] && bb cp "$WORKDIR/netconsole.txt" "$BUNDLE/netconsole.txt"
	if [ -d "$MODDIR" ]; then
		(cd "$MODDIR" && bb find . -name '*.ko*' | bb sed 's#^[.]/##' | bb sort) >"$BUNDLE/initramfs-modules.txt"
	else
		echo "# no $MODDIR" >"$BUNDLE/initramfs-modules.txt"
	fi
	devices_txt
	storage_txt
	_root=${ROOT:-}
	[ -n "$_root" ] || _root=$(cmdline_arg root) || _root=""
	_flags=${ROOTFLAGS:-}
	[ -n "$_flags" ] || _flags=$(cmdline_arg rootflags) || _flags=""
	{
		echo "KERNEL=$KERNEL"
		echo "HOSTNAME=$ID_HOST"
		echo "MACHINE=$ID_MACHINE"
		echo "BOOT_ID=$BOOT_ID"
		echo "GENERATOR=$(detect_generator)"
		echo "ROOT=$_root"
		echo "ROOTFSTYPE=${ROOTFSTYPE:-}"
		echo "ROOTFLAGS=$_flags"
		echo "REASON=$REASON"
		echo "RESCUE_VERSION=$RESCUE_VERSION"
	} | mask >"$BUNDLE/info.txt"
}

checksums() {
	(
		cd "$BUNDLE" || exit 1
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
	_hdr="RESCUE/1 name=bundle $(identity_header)"
	[ -n "$RESCUE_TOKEN" ] && _hdr="$_hdr token=$(header_value "$RESCUE_TOKEN")"
	_optional=""
	[ -f "$BUNDLE/netconsole.txt" ] && _optional=netconsole.txt
	{
		echo "$_hdr"
		# shellcheck disable=SC2086  # the optional files, one word each
		(cd "$BUNDLE" && bb tar -cf - dmesg.txt cmdline.txt modules.txt crypto.txt filesystems.txt partitions.txt \
			mounts.txt blkid.txt disks.txt info.txt initramfs-modules.txt modules-dep.txt network.txt \
			modcheck.txt devices.txt storage.txt $_optional SHA256SUMS)
	} >"$WORKDIR/payload"
	_bytes=$(bb wc -c <"$WORKDIR/payload")
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
		bb timeout "$_t" "${BB:-nc}" ${BB:+nc} -w 3 "$RESCUE_HOST" "$RESCUE_PORT" <"$WORKDIR/payload" \
			>"$WORKDIR/nc.out" 2>"$WORKDIR/nc.err"
		_rc=$?
		# busybox nc exits 0 on a reset that follows its own EOF: the listener's refusal line is what tells.
		_refused=$(bb grep -m 1 '^rescue: refused: ' "$WORKDIR/nc.out" 2>/dev/null)
		if [ "$_rc" = 0 ] && [ -z "$_refused" ]; then
			say "sent $_bytes bytes to $RESCUE_HOST:$RESCUE_PORT"
			echo "$RESCUE_HOST:$RESCUE_PORT $_bytes" >"$SENT"
			return 0
		fi
		_err=${_refused:-$(bb tail -n 1 "$WORKDIR/nc.err" 2>/dev/null)}
		[ -n "$_err" ] || _err="nc exit status $_rc"
		case $_refused in
		*token* | *--allow*) break ;; # the same bytes would be refused again
		esac
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

WORKDIR=${RESCUE_WORKDIR:-$PREFIX/run/rescue}
BUNDLE=$WORKDIR/bundle
bb mkdir -p "$WORKDIR" || exit 1
# Send once per boot: panic() may run more than once, and the watchdog, the panic script and dracut's
# emergency hook share one marker. rescue.always=1 sends before the mount, on every boot: its own marker.
SENT=$WORKDIR/sent-failure
[ "$REASON" = always ] && SENT=$WORKDIR/sent-always
if [ -f "$SENT" ]; then
	say "evidence already sent ($REASON) to $(bb cat "$SENT") bytes; not sending again"
	exit 0
fi
if ! bb mkdir "$WORKDIR/lock" 2>/dev/null; then
	# A collector that was killed leaves its lock behind: take it over when its process is gone.
	_pid=$(bb cat "$WORKDIR/lock/pid" 2>/dev/null)
	if [ -n "$_pid" ] && kill -0 "$_pid" 2>/dev/null; then
		say "another collector is running (pid $_pid); not starting a second one"
		exit 0
	fi
	bb rm -rf "$WORKDIR/lock"
	bb mkdir "$WORKDIR/lock" || exit 1
fi
echo "$$" >"$WORKDIR/lock/pid"
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
trap 'kill "$WATCHDOG" 2>/dev/null; bb rm -rf "$WORKDIR/lock"' 0
trap 'stop_work; exit 1' 1 2 15

main() {
	bb rm -rf "$BUNDLE"
	bb mkdir -p "$BUNDLE"
	KERNEL=$(first_line "$PREFIX/proc/sys/kernel/osrelease")
	[ -n "$KERNEL" ] || KERNEL=$(bb uname -r)
	BOOT_ID=$(first_line "$PREFIX/proc/sys/kernel/random/boot_id")
	MODDIR=$PREFIX/lib/modules/$KERNEL
	identity ""
	# Before dmesg is read: the bundle's dmesg then carries the same line as a netconsole stream.
	identity_kmsg

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
	# The MAC of the NIC actually used, now that it is known.
	identity "$NET_DEVICE"
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
