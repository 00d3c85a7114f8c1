#!/bin/sh
# rescue: read KEY=value configuration files without running them. Used by the collector in the image
# (/etc/rescue.conf) and, at build time, by the Debian package's hooks (/etc/rescue/initramfs.conf).
# POSIX sh for busybox ash.

# conf_read FILE KEY...: set each KEY the file names to its value (surrounding quotes dropped); comments,
# blank lines and other keys are ignored, and nothing in the file is ever executed. Status 1 when the file
# cannot be read.
conf_read() {
	_conf_file=$1
	shift
	[ -r "$_conf_file" ] || return 1
	while IFS='=' read -r _conf_k _conf_v || [ -n "$_conf_k" ]; do
		_conf_v=${_conf_v#\"}
		_conf_v=${_conf_v%\"}
		_conf_v=${_conf_v#\'}
		_conf_v=${_conf_v%\'}
		for _conf_want in "$@"; do
			# The name comes from the caller's list, the value only through a variable: no code from the file.
			[ "$_conf_k" = "$_conf_want" ] && eval "$_conf_want=\$_conf_v"
		done
	done <"$_conf_file"
	return 0
}
