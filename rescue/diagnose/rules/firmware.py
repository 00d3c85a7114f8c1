"""Firmware files a driver asked for and the image lacks (a warning: most do not stop a boot)."""

from __future__ import annotations

import re

from rescue.diagnose.rules.base import (
    DRACUT_FIX_CONF,
    Context,
    Rule,
    log,
    with_rebuild,
)


def _fix_firmware(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
    files = " ".join(f"/lib/firmware/{f}" for f in params.get("firmware", []))
    package = f"# install the package that ships {files}"
    return with_rebuild(
        {
            "initramfs-tools": f"{package} (apt-file search)",
            "dracut": f"echo 'install_items+=\" {files} \"' >> {DRACUT_FIX_CONF}",
            "mkinitcpio": f"{package} (pacman -F), and add it to FILES=(...) in /etc/mkinitcpio.conf",
            "booster": f"{package} (pacman -F)",
        },
        ctx,
    )


FIRMWARE_MISSING = Rule(
    id="firmware-missing",
    severity="warning",
    title="firmware {firmware} was not found",
    matches=(
        log(
            "Direct firmware load for",
            r"Direct firmware load for (?P<firmware>\S+) failed with error (?P<err>-?\d+)",
        ),
    ),
    fix=_fix_firmware,
    group_by=("firmware",),
    # cfg80211 falls back to its built-in rules when regulatory.db is absent.
    ignore=re.compile(r"\bregulatory\.db"),
)
