"""Real initramfs images for the check-image tests, built with mkinitramfs or dracut.

Uses rescue.imagebuild (CONTRACTS.md §7) when it is available; until then the same image is built here
with `mkinitramfs -d` on a copy of /etc/initramfs-tools plus a build hook that deletes the dropped modules
from ${DESTDIR} after every other hook has run (mkinitramfs then re-runs depmod over the hole).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rescue.run import run


def installed_kernel() -> str:
    """The Debian cloud kernel installed here (its version changes with security updates), else any kernel
    with modules and a vmlinuz; "" when there is none."""
    found = sorted(
        (d.name for d in Path("/lib/modules").glob("*") if (d / "modules.dep").is_file()),
        key=lambda v: ("cloud" in v, v),
    )
    for kver in reversed(found):
        if Path(f"/boot/vmlinuz-{kver}").is_file():
            return kver
    return found[-1] if found else ""


_DROP_HOOK = """#!/bin/sh
# Test hook: remove modules from the image to reproduce an initramfs that lacks them.
PREREQ=""
prereqs() {{ echo "$PREREQ"; }}
case "$1" in prereqs) prereqs; exit 0 ;; esac
for m in {modules}; do
	find "${{DESTDIR}}/lib/modules" "${{DESTDIR}}/usr/lib/modules" -name "$m.ko*" -delete 2>/dev/null || true
done
"""


def build_initramfs_tools_image(
    out: Path, kver: str, *, drop_modules: Sequence[str] = (), modules: str = "most"
) -> Path:
    try:
        from rescue import imagebuild  # type: ignore[attr-defined]
    except ImportError:
        imagebuild = None
    if imagebuild is not None:
        built: Path = imagebuild.build_initramfs_tools_image(
            out, kver, host="127.0.0.1", port=3333, modules=modules, drop_modules=drop_modules
        )
        return built
    with tempfile.TemporaryDirectory(prefix="rescue-confdir-") as tmp:
        confdir = Path(tmp) / "initramfs-tools"
        shutil.copytree("/etc/initramfs-tools", confdir, symlinks=True)
        conf = confdir / "initramfs.conf"
        lines = [ln for ln in conf.read_text().splitlines() if not ln.startswith("MODULES=")]
        conf.write_text("\n".join([*lines, f"MODULES={modules}", ""]))
        if drop_modules:
            hook = confdir / "hooks" / "zz-rescue-test-drop-modules"
            hook.parent.mkdir(exist_ok=True)
            hook.write_text(_DROP_HOOK.format(modules=" ".join(drop_modules)))
            hook.chmod(0o755)
        run(["mkinitramfs", "-d", confdir, "-o", out, kver], timeout=900)
    return out


def build_dracut_image(out: Path, kver: str, *, omit_drivers: Sequence[str] = ()) -> Path:
    try:
        from rescue import imagebuild  # type: ignore[attr-defined]
    except ImportError:
        imagebuild = None
    if imagebuild is not None:
        built: Path = imagebuild.build_dracut_image(
            out, kver, host="127.0.0.1", port=3333, drop_modules=omit_drivers
        )
        return built
    argv: list[str | Path] = ["dracut", "--no-hostonly", "--force", "--quiet"]
    if omit_drivers:
        argv += ["--omit-drivers", " ".join(omit_drivers)]
    run([*argv, out, kver], timeout=900)
    return out
