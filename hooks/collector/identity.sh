#!/bin/sh
# rescue collector, identity: which machine and which boot this is, for the RESCUE/1 header line and the
# kernel log (so a netconsole stream carries the same identity as the bundle). Sourced by collect.sh and
# watchdog.sh (PREFIX and the configuration already set); POSIX sh for busybox ash, with no forks (`read`
# instead of `cat`): the watchdog runs this on every boot.
#
# identity [NIC] sets ID_MACHINE, ID_HOST, ID_MAC, ID_UUID, ID_BOOT, ID_KVER (empty when unknown):
#   machine = the image's /etc/machine-id, else the DMI product_uuid, else the NIC's MAC without colons;
#   host    = RESCUE_HOSTNAME baked in at build time (the system's /etc/hostname), else the image's
#             /etc/hostname, else the kernel's hostname unless it is the initramfs default "(none)".
# shellcheck shell=sh

# id_read VAR FILE: VAR = the first line of FILE, empty when it cannot be read.
id_read() {
	eval "$1=''"
	[ -r "$2" ] || return 1
	IFS= read -r "$1" <"$2" 2>/dev/null
	return 0
}

# Only characters the header and a directory name can carry; anything else becomes _.
id_clean() {
	eval "_id_v=\$$1"
	_id_out=""
	while [ -n "$_id_v" ]; do
		_id_rest=${_id_v#?}
		_id_c=${_id_v%"$_id_rest"}
		case $_id_c in
		[A-Za-z0-9._:-]) _id_out=$_id_out$_id_c ;;
		*) _id_out=${_id_out}_ ;;
		esac
		_id_v=$_id_rest
	done
	eval "$1=\$_id_out"
}

identity() {
	_id_net=${RESCUE_SYSNET:-$PREFIX/sys/class/net}
	id_read ID_BOOT "$PREFIX/proc/sys/kernel/random/boot_id"
	id_read ID_KVER "$PREFIX/proc/sys/kernel/osrelease"
	id_read ID_UUID "$PREFIX/sys/class/dmi/id/product_uuid"
	case $ID_UUID in
	# Firmware placeholders identify nothing.
	'' | *[!0-9A-Fa-f-]* | 00000000-0000-0000-0000-000000000000 | [Ff][Ff][Ff][Ff][Ff][Ff][Ff][Ff]-*) ID_UUID="" ;;
	esac
	# The MAC of the NIC used (the collector's), else of the first interface with a device behind it.
	_id_dev=${1:-}
	if [ -z "$_id_dev" ]; then
		for _id_d in "$_id_net"/*/device; do
			[ -e "$_id_d" ] || continue
			_id_dev=${_id_d%/device}
			_id_dev=${_id_dev##*/}
			break
		done
	fi
	ID_MAC=""
	[ -n "$_id_dev" ] && id_read ID_MAC "$_id_net/$_id_dev/address"
	id_read ID_MACHINE "$PREFIX/etc/machine-id"
	case $ID_MACHINE in
	'' | *[!0-9a-f]* | 00000000000000000000000000000000) ID_MACHINE=$ID_UUID ;;
	esac
	if [ -z "$ID_MACHINE" ] && [ -n "$ID_MAC" ]; then
		_id_rest=$ID_MAC
		while [ -n "$_id_rest" ]; do
			case $_id_rest in
			*:*) ID_MACHINE=$ID_MACHINE${_id_rest%%:*} && _id_rest=${_id_rest#*:} ;;
			*) ID_MACHINE=$ID_MACHINE$_id_rest && _id_rest="" ;;
			esac
		done
	fi
	ID_HOST=${RESCUE_HOSTNAME:-}
	[ -n "$ID_HOST" ] || id_read ID_HOST "$PREFIX/etc/hostname"
	[ -n "$ID_HOST" ] || id_read ID_HOST "$PREFIX/proc/sys/kernel/hostname"
	[ "$ID_HOST" = "(none)" ] && ID_HOST=""
	for _id_k in ID_MACHINE ID_HOST ID_MAC ID_UUID ID_BOOT ID_KVER; do
		eval "_id_v=\$$_id_k"
		case $_id_v in
		*[!A-Za-z0-9._:-]*) id_clean "$_id_k" ;; # rare: the character loop only then
		esac
	done
}

# The identity line in the kernel log (RESCUE_KMSG instead of /dev/kmsg, for tests).
identity_kmsg() {
	_id_kmsg=${RESCUE_KMSG:-$PREFIX/dev/kmsg}
	[ -w "$_id_kmsg" ] || return 0
	echo "<5>rescue: boot=${ID_BOOT:--} machine=${ID_MACHINE:--}" >"$_id_kmsg" 2>/dev/null
	return 0
}

# The header's identity fields: each only when known.
identity_header() {
	_id_h=""
	[ -n "$ID_MACHINE" ] && _id_h="$_id_h machine=$ID_MACHINE"
	[ -n "$ID_HOST" ] && _id_h="$_id_h host=$ID_HOST"
	[ -n "$ID_MAC" ] && _id_h="$_id_h mac=$ID_MAC"
	[ -n "$ID_UUID" ] && _id_h="$_id_h uuid=$ID_UUID"
	[ -n "$ID_BOOT" ] && _id_h="$_id_h boot=$ID_BOOT"
	[ -n "$ID_KVER" ] && _id_h="$_id_h kver=$ID_KVER kernel=$ID_KVER"
	echo "${_id_h# }"
}
