#!/bin/sh
# dracut module for rescue: when the boot fails (dracut's emergency hook), send the evidence to the rescue
# listener. Named rescue-send because dracut already ships a module called "rescue" (03rescue).
# `rescue hooks render --flavor dracut` puts collector/ and rescue.conf beside this file; the Debian package
# reads /etc/rescue/initramfs.conf instead and stays out of the image until that names a listener.
# dracut images have no nc: the module brings busybox (nc, tar, sha256sum, udhcpc) and klibc ipconfig.

# shellcheck disable=SC2154  # moddir and initdir are set by dracut

_rescue_busybox() {
	for _b in /bin/busybox /usr/bin/busybox; do
		if [ -x "$_b" ] && "$_b" --list | grep -qx nc; then
			echo "$_b"
			return 0
		fi
	done
	return 1
}

# Packaged (the Debian package's module in /usr/lib/dracut/modules.d): the collector is in /usr/share/rescue
# and /etc/rescue/initramfs.conf says where to send; rendered (`rescue hooks render`): both lie in $moddir.
_rescue_pkglib=${RESCUE_DATADIR:-/usr/share/rescue}/lib/rescue-packaged.sh

# The image's /etc/rescue.conf from /etc/rescue/initramfs.conf; status 1 while it names no listener.
_rescue_pkg_conf() {
	(
		# shellcheck source=/dev/null  # hooks/lib/rescue-packaged.sh, installed in /usr/share/rescue/lib
		. "$_rescue_pkglib"
		rescue_pkg_load && rescue_pkg_conf
	)
}

# called by dracut. 0: in every image (dracut's default "all modules whose check passes"); 1: never, not
# even when asked for by name (dracut then stops with an error). So: 1 unless configured.
check() {
	# Without busybox's nc the image could collect but never send.
	_rescue_busybox >/dev/null || return 1
	[ -r "$moddir/collector/collect.sh" ] && return 0
	[ -r "$_rescue_pkglib" ] && _rescue_pkg_conf >/dev/null && return 0
	return 1
}

# called by dracut
depends() {
	return 0
}

# called by dracut
installkernel() {
	# This machine's network drivers, and the ones a VM usually has (missing ones are skipped).
	for _dev in /sys/class/net/*; do
		[ -e "$_dev/device/driver/module" ] || continue
		_mod=$(readlink "$_dev/device/driver/module")
		instmods "${_mod##*/}"
	done
	instmods virtio_pci virtio_net e1000 e1000e
	# netconsole (rescue.netconsole=1, rescue-netconsole.sh): small, and asked for at boot time.
	instmods netconsole configfs
	return 0
}

# The collector's files, whatever they are (the directory is the list), each as /lib/rescue/NAME.
_rescue_collector() {
	for _f in "$1"/*; do
		inst_simple "$_f" "/lib/rescue/${_f##*/}"
		chmod 755 "$initdir/lib/rescue/${_f##*/}"
	done
}

# called by dracut
install() {
	if [ -r "$moddir/collector/collect.sh" ]; then
		_rescue_collector "$moddir/collector"
		if [ -r "$moddir/rescue.conf" ]; then
			inst_simple "$moddir/rescue.conf" /etc/rescue.conf
			chmod 600 "$initdir/etc/rescue.conf"
		fi
	else
		_conf=$(_rescue_pkg_conf) || return 1
		_rescue_collector "${_rescue_pkglib%/lib/*}/collector"
		mkdir -p "$initdir/etc"
		(
			umask 077
			printf '%s\n' "$_conf" >"$initdir/etc/rescue.conf"
		)
		chmod 600 "$initdir/etc/rescue.conf"
	fi
	inst_binary "$(_rescue_busybox)" /lib/rescue/busybox
	if [ -x /usr/lib/klibc/bin/ipconfig ]; then
		inst_simple /usr/lib/klibc/bin/ipconfig /lib/rescue/ipconfig
		for _lib in /lib/klibc-*.so; do
			[ -e "$_lib" ] && inst_simple "$_lib"
		done
	fi
	_rescue_hostname >>"$initdir/etc/rescue.conf"
	# The kernel's PCI and virtio aliases: the collector names the driver a device lacks even when that
	# driver was left out of the image (whose own modules.alias then forgets it).
	grep -E '^alias (pci|virtio):' "${srcmods:-/lib/modules/$kernel}/modules.alias" \
		>"$initdir/lib/rescue/kernel.alias" 2>/dev/null || true
	inst_hook emergency 50 "$moddir/rescue-emergency.sh"
	# netconsole as soon as the NIC can have an address: once udev settled; pre-mount too, for a root that
	# was found before the first settled hook ran (netconsole.sh runs once per boot).
	inst_hook initqueue/settled 90 "$moddir/rescue-netconsole.sh"
	inst_hook pre-mount 05 "$moddir/rescue-netconsole.sh"
	# rescue.always=1: send on every boot, late before the mount (the root device has had its chance).
	inst_hook pre-mount 90 "$moddir/rescue-always.sh"
	# The watchdog: with the shell init from a cmdline hook, with systemd as a unit (see watchdog.sh).
	inst_hook cmdline 99 "$moddir/rescue-watchdog-start.sh"
	inst_hook pre-pivot 99 "$moddir/rescue-watchdog-stop.sh"
	if dracut_module_included systemd && [ -n "${systemdsystemunitdir:-}" ]; then
		inst_simple "$moddir/rescue-watchdog.service" "$systemdsystemunitdir/rescue-watchdog.service"
		mkdir -p "$initdir$systemdsystemunitdir/sysinit.target.wants"
		ln_r "$systemdsystemunitdir/rescue-watchdog.service" \
			"$systemdsystemunitdir/sysinit.target.wants/rescue-watchdog.service"
	fi
	return 0
}

# This system's host name for the image's /etc/rescue.conf (the initramfs itself only knows "(none)").
_rescue_hostname() {
	_h=""
	[ -r /etc/hostname ] && read -r _h </etc/hostname
	_h=$(printf '%s' "$_h" | tr -c 'A-Za-z0-9._-' '_')
	[ -z "$_h" ] || echo "RESCUE_HOSTNAME=$_h"
}
