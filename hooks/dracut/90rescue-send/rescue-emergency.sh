#!/bin/sh
# dracut emergency hook (sourced by emergency_shell, so no `exit`): send the evidence to the rescue listener
# before the shell starts, or before dracut halts when rd.shell=0. The collector is bounded by RESCUE_TIMEOUT
# and sends once per boot.
if [ -r /lib/rescue/collect.sh ]; then
	RESCUE_GENERATOR=dracut \
		ROOT="$(getarg root=)" \
		ROOTFSTYPE="$(getarg rootfstype=)" \
		ROOTFLAGS="$(getarg rootflags=)" \
		/bin/sh /lib/rescue/collect.sh emergency
fi
