"""The one kernel the tests, benchmarks and scripts use: rescue.kmod.chosen_kernel().

That is $RESCUE_KERNEL when set, else the newest kernel installed here (numeric order, modules.dep
present). Debian moves the ABI number with security updates, so no test names a version.
"""

from __future__ import annotations

import functools
from pathlib import Path

from rescue.kmod import KERNEL_ENV, ModuleDB, chosen_kernel, module_name

KERNEL = chosen_kernel()
KVER = KERNEL.version if KERNEL else ""
HOST_MODDIR = KERNEL.moddir if KERNEL else Path("/lib/modules/(none)")
MISSING = f"no kernel with modules.dep under /lib/modules (make deps installs one; {KERNEL_ENV} names one)"


def ko(rel: str) -> str:
    """A module's path as this kernel ships it: kernel/lib/libcrc32c.ko is kernel/lib/libcrc32c.ko.xz from
    Debian's 6.12 on. The name is looked up in the kernel's own modules.dep."""
    paths = _module_paths()
    return paths.get(module_name(rel), rel)


@functools.cache
def _module_paths() -> dict[str, str]:
    return ModuleDB.load(HOST_MODDIR).paths if KERNEL else {}
