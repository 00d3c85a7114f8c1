"""The package's shell files as real paths: the same lookup from a source checkout and from an install.

A wheel carries the checkout's hooks/ as rescue/_hooks/ and the harness's guest scripts as
rescue/harness/guest/.
`importlib.resources.files()` of the package gives their place; joining names onto it (never str() of a
namespace package's MultiplexedPath) keeps it a Traversable, and a plain directory install makes that a
pathlib.Path. The generators and qemu need files on disk, so a zipped install is refused with a hint.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rescue.errors import RescueError

_CHECKOUT = Path(__file__).resolve().parent.parent  # the source tree, when running from a checkout


def _package_dir(name: str, checkout: Path) -> Path:
    packaged = resources.files("rescue")
    for part in name.split("/"):
        packaged = packaged.joinpath(part)
    if packaged.is_dir():
        if isinstance(packaged, Path):
            return packaged
        raise RescueError(
            f"rescue's {name} files are inside an archive ({packaged})",
            hint="install rescue unpacked (pip install, not a zipapp)",
        )
    if checkout.is_dir():
        return checkout
    raise RescueError(f"rescue's {name} files are missing", hint="a broken installation: reinstall rescue")


def hooks_dir() -> Path:
    """hooks/: the initramfs-tools and dracut hooks and the collector (collector/)."""
    return _package_dir("_hooks", _CHECKOUT / "hooks")


def collector_files(directory: Path | None = None) -> list[Path]:
    """The collector: every file of hooks/collector/ (collect.sh first), each installed in the image as
    /lib/rescue/NAME. The directory is the one list the renderer, the test initramfs and the generators'
    hooks all read."""
    directory = directory or hooks_dir() / "collector"
    files = [p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")]
    if not any(p.name == "collect.sh" for p in files):
        raise RescueError(f"{directory}: no collect.sh", hint="a broken installation: reinstall rescue")
    return sorted(files, key=lambda p: (p.name != "collect.sh", p.name))


def guest_dir() -> Path:
    """The harness's guest scripts (test-init.sh, the test initramfs's /init)."""
    return _package_dir("harness/guest", Path(__file__).resolve().parent / "harness" / "guest")
