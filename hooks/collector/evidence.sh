#!/bin/sh
# rescue collector, evidence about the disks: devices without a driver (devices.txt), the storage layers
# (storage.txt: /proc/mdstat, lvm, cryptsetup, zpool, the /dev/disk/by-* names and, for a missing root, the
# UUIDs and labels that do exist). Sourced by collect.sh (PREFIX, MODDIR, BUNDLE, LIB, bb set); POSIX sh for
# busybox ash. Every probe is bounded: a dying disk must not hold the collector.
# shellcheck shell=sh disable=SC2154  # the variables collect.sh sets before it sources this file

# devices.txt, one line per PCI or virtio device that no driver has bound:
#   <sysfs path> class=<hex class|-> modalias=<modalias> module=<module|-> in_image=<yes|no|->
# The module comes from the image's modules.alias, else the kernel's own PCI and virtio aliases that the
# build hook put beside the collector (kernel.alias: the image's table lacks whatever was left out of it).
# in_image: the module file is in the image or built into the kernel. This is how a missing virtio_blk or
# nvme is named: the disk's controller is there, its driver is not.
devices_txt() {
	for _dev in "$PREFIX"/sys/bus/pci/devices/* "$PREFIX"/sys/bus/virtio/devices/*; do
		[ -e "$_dev/modalias" ] || continue
		[ -e "$_dev/driver" ] && continue
		_path=$(bb readlink -f "$_dev" 2>/dev/null) || _path=$_dev
		_class=-
		[ -r "$_dev/class" ] && read -r _class <"$_dev/class"
		case $_class in
		0x06*) continue ;; # bridges: nothing to drive
		esac
		read -r _modalias <"$_dev/modalias"
		echo "${_path#"$PREFIX"} $_class $_modalias"
	done >"$WORKDIR/devices.in"
	bb awk -v DEVICES="$WORKDIR/devices.in" -v FILES="$BUNDLE/initramfs-modules.txt" '
		function norm(s) { gsub(/-/, "_", s); return s }
		function base(p) { sub(/.*\//, "", p); sub(/\.ko.*$/, "", p); return norm(p) }
		# A modules.alias pattern is a shell glob: as a regex, anchored.
		function glob2re(g,    r, i, c) {
			r = "^"
			for (i = 1; i <= length(g); i++) {
				c = substr(g, i, 1)
				if (c == "*") r = r ".*"
				else if (c == "?") r = r "."
				else if (c == "[" || c == "]") r = r c
				else if (c ~ /[A-Za-z0-9_:]/) r = r c
				else r = r "\\" c
			}
			return r "$"
		}
		FILENAME == FILES { inimage[base($0)] = 1; next }
		FILENAME == DEVICES { n++; dev[n] = $1; cls[n] = $2; alias[n] = $3; next }
		# busybox awk compiles a dynamic regex at every use: only a pattern whose literal start begins a
		# device modalias is turned into one (a whole kernel has hundreds of PCI aliases).
		/^alias / && ($2 ~ /^(pci|virtio):/) {
			lit = $2
			sub(/[*?[].*/, "", lit)
			for (i = 1; i <= n; i++) {
				if ((i in mod) || index(alias[i], lit) != 1) continue
				if (alias[i] ~ glob2re($2)) mod[i] = norm($3)
			}
			next
		}
		FILENAME ~ /modules\.builtin$/ { inimage[base($0)] = 1 }
		END {
			for (i = 1; i <= n; i++) {
				m = (i in mod) ? mod[i] : "-"
				have = (m == "-") ? "-" : ((m in inimage) ? "yes" : "no")
				printf "%s class=%s modalias=%s module=%s in_image=%s\n", dev[i], cls[i], alias[i], m, have
			}
		}' "$WORKDIR/devices.in" "$BUNDLE/initramfs-modules.txt" "$(walk_input "$MODDIR/modules.builtin" builtin)" \
		"$(walk_input "$MODDIR/modules.alias" alias)" "$(walk_input "$LIB/kernel.alias" kalias)" \
		>"$BUNDLE/devices.txt" 2>&1
}

# The first of the tool's usual places that exists, else nothing.
find_tool() {
	for _t in "/sbin/$1" "/usr/sbin/$1" "/bin/$1" "/usr/bin/$1"; do
		[ -x "$PREFIX$_t" ] && echo "$PREFIX$_t" && return 0
	done
	return 1
}

# A storage tool: whether the image has it and what it says now (bounded, the last lines only).
tool_report() {
	_name=$1
	shift
	if ! _bin=$(find_tool "$_name"); then
		echo "--- $_name: not in the image"
		return 0
	fi
	echo "--- $_name: ${_bin#"$PREFIX"}"
	while [ $# -gt 0 ]; do
		echo "\$ $_name $1"
		# shellcheck disable=SC2086  # the arguments are words
		LVM_SUPPRESS_FD_WARNINGS=1 bb timeout 5 "$_bin" $1 </dev/null 2>&1 | bb tail -n 20
		shift
	done
}

LVM_NO_UDEV="--config devices{obtain_device_list_from_udev=0}"

storage_txt() {
	{
		echo "--- /proc/mdstat"
		bb cat "$PREFIX/proc/mdstat" 2>&1
		# From /dev, not udev's database: while udev is still busy, lvm waits 10 s for each device it lists.
		tool_report lvm "vgs $LVM_NO_UDEV" "lvs -a -o +devices $LVM_NO_UDEV"
		tool_report cryptsetup "--version"
		echo "--- /dev/mapper"
		bb ls -l "$PREFIX/dev/mapper" 2>&1
		tool_report zpool "status" "import"
		for _by in uuid label partuuid; do
			echo "--- /dev/disk/by-$_by"
			bb ls "$PREFIX/dev/disk/by-$_by" 2>&1
		done
		case $(root_device_state) in
		*" missing")
			echo "--- the root ($(root_spec)) is missing; the file systems that exist (blkid):"
			bb cat "$BUNDLE/blkid.txt" 2>&1
			;;
		esac
	} >"$BUNDLE/storage.txt" 2>&1
}
