#!/bin/sh
# dracut cmdline hook (sourced, so no `exit`): start the rescue watchdog with dracut's shell init. Under
# systemd rescue-watchdog.service does it (a process left behind by dracut-cmdline.service would be ended
# with that service).
if [ -z "${DRACUT_SYSTEMD:-}" ] && [ -r /lib/rescue/watchdog.sh ]; then
	/bin/sh /lib/rescue/watchdog.sh dracut &
fi
