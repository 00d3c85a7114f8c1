#!/bin/sh
# dracut hook (sourced, so no `exit`; installed as initqueue/settled and pre-mount): arm netconsole when
# rescue.netconsole=1 asks for it. netconsole.sh runs once per boot (it leaves /run/rescue/netconsole.txt).
if [ -r /lib/rescue/netconsole.sh ] && [ ! -e /run/rescue/netconsole.txt ]; then
	/bin/sh /lib/rescue/netconsole.sh
fi
