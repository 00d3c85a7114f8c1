"""The one kernel the tests, benchmarks and scripts use: rescue.modules.chosen_kernel().

That is $RESCUE_KERNEL when set, else the newest kernel installed here (numeric order, modules.dep
present). Debian moves the ABI number with security updates, so no test names a version.
"""

from __future__ import annotations

from pathlib import Path

from rescue.modules import KERNEL_ENV, chosen_kernel

KERNEL = chosen_kernel()
KVER = KERNEL.version if KERNEL else ""
HOST_MODDIR = KERNEL.moddir if KERNEL else Path("/lib/modules/(none)")
MISSING = f"no kernel with modules.dep under /lib/modules (make deps installs one; {KERNEL_ENV} names one)"
