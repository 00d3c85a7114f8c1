"""Real initramfs images for the check-image and analysis tests: rescue.harness.imagebuild with the hooks
baked in for a listener on 127.0.0.1:3333 (the image tests look at the module closure, not the address)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rescue.harness import imagebuild


def build_initramfs_tools_image(
    out: Path, kver: str, *, drop_modules: Sequence[str] = (), modules: str = "most"
) -> Path:
    return imagebuild.build_initramfs_tools_image(
        out, kver, host="127.0.0.1", port=3333, modules=modules, drop_modules=drop_modules
    )


def build_dracut_image(out: Path, kver: str, *, omit_drivers: Sequence[str] = ()) -> Path:
    return imagebuild.build_dracut_image(out, kver, host="127.0.0.1", port=3333, drop_modules=omit_drivers)
