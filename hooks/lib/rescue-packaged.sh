# rescue: what the Debian package's initramfs-tools hook and dracut module share (sourced at image build
# time, never copied into the image). The package's hooks are inert until /etc/rescue/initramfs.conf names a
# listener: rescue_pkg_load says whether it does, rescue_pkg_conf writes the image's /etc/rescue.conf.
#
# The conffile is parsed, not sourced: KEY=value lines (RESCUE_HOST, RESCUE_PORT, RESCUE_TOKEN_FILE,
# RESCUE_IP, RESCUE_TIMEOUT), optional quotes, comments; no code runs. For tests: RESCUE_CONFFILE (the
# conffile) and RESCUE_DATADIR (instead of /usr/share/rescue).

RESCUE_DATADIR=${RESCUE_DATADIR:-/usr/share/rescue}
RESCUE_CONFFILE=${RESCUE_CONFFILE:-/etc/rescue/initramfs.conf}
# shellcheck source=../collector/conf.sh source-path=SCRIPTDIR
. "$RESCUE_DATADIR/collector/conf.sh"

# Read the conffile into RESCUE_*; status 0 when it names a listener (RESCUE_HOST not empty).
rescue_pkg_load() {
	RESCUE_HOST="" RESCUE_PORT=3333 RESCUE_TOKEN_FILE="" RESCUE_IP="" RESCUE_TIMEOUT=30 RESCUE_NETCONSOLE=""
	conf_read "$RESCUE_CONFFILE" RESCUE_HOST RESCUE_PORT RESCUE_TOKEN_FILE RESCUE_IP RESCUE_TIMEOUT \
		RESCUE_NETCONSOLE || return 1
	[ -n "$RESCUE_HOST" ]
}

_rescue_pkg_bad() {
	echo "W: rescue: $RESCUE_CONFFILE: $1; the image will not send evidence" >&2
	return 1
}

# Print the image's /etc/rescue.conf from the loaded values (the token file's first line becomes
# RESCUE_TOKEN); status 1, with a warning, when a value is unusable.
rescue_pkg_conf() {
	case $RESCUE_HOST in
	*[!A-Za-z0-9._:-]*) _rescue_pkg_bad "bad RESCUE_HOST" || return 1 ;;
	esac
	case $RESCUE_PORT in
	'' | *[!0-9]*) _rescue_pkg_bad "bad RESCUE_PORT" || return 1 ;;
	esac
	case $RESCUE_TIMEOUT in
	'' | *[!0-9]*) _rescue_pkg_bad "bad RESCUE_TIMEOUT" || return 1 ;;
	esac
	case $RESCUE_IP in
	*[!A-Za-z0-9._:-]*) _rescue_pkg_bad "bad RESCUE_IP" || return 1 ;;
	esac
	_token=""
	if [ -n "$RESCUE_TOKEN_FILE" ]; then
		[ -r "$RESCUE_TOKEN_FILE" ] || _rescue_pkg_bad "cannot read $RESCUE_TOKEN_FILE" || return 1
		IFS= read -r _token <"$RESCUE_TOKEN_FILE" || true
		# Surrounding white space is not part of the token (as for `rescue listen --token-file`).
		_token=$(printf '%s' "$_token" | tr -d ' \t\r')
		case $_token in
		*[!!-~]*) _rescue_pkg_bad "$RESCUE_TOKEN_FILE: not a token" || return 1 ;;
		esac
	fi
	echo "# rescue: written at image build time from $RESCUE_CONFFILE; the kernel command line overrides these"
	echo "RESCUE_HOST=$RESCUE_HOST"
	echo "RESCUE_PORT=$RESCUE_PORT"
	echo "RESCUE_TIMEOUT=$RESCUE_TIMEOUT"
	[ -z "$_token" ] || echo "RESCUE_TOKEN=$_token"
	[ -z "$RESCUE_IP" ] || echo "RESCUE_IP=$RESCUE_IP"
	[ "$RESCUE_NETCONSOLE" != 1 ] || echo "RESCUE_NETCONSOLE=1"
	return 0
}
