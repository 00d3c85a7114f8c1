#!/bin/sh
# dracut pre-pivot hook (sourced, so no `exit`): the root is mounted; stop the rescue watchdog so that
# nothing of the initramfs runs on after switch_root.
if [ -r /lib/rescue/watchdog.sh ]; then
	/bin/sh /lib/rescue/watchdog.sh stop
fi
