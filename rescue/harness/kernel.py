"""A real Debian kernel for the qemu harness: resolve, download, unpack, depmod, cache.

The cache holds one directory per resolved package and Debian version, so a cached kernel is never
downloaded again and a security update (new ABI number, new package) lands beside the old one.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rescue.errors import RescueError
from rescue.kmod import KERNEL_ENV, chosen_kernel, installed_kernels
from rescue.run import run

DEFAULT_PACKAGE = "linux-image-cloud-amd64"
_READY = ".ready"  # written last: a directory without it is a half-finished unpack
# A real kernel package has its ABI in its name (linux-image-6.1.0-56-cloud-amd64); a meta-package has not.
_REAL_PACKAGE = re.compile(r"^linux-image-\d+\.\d+")


@dataclass(frozen=True)
class Kernel:
    package: str  # the real package, e.g. linux-image-6.1.0-56-cloud-amd64
    deb_version: str  # its Debian version, e.g. 6.1.192-2
    version: str  # uname -r, e.g. 6.1.0-56-cloud-amd64
    root: Path  # the unpacked package
    vmlinuz: Path
    moddir: Path  # root/lib/modules/<version>, with modules.dep made by depmod


def default_cache_dir() -> Path:
    return Path(os.environ.get("RESCUE_CACHE") or "./.cache/rescue").resolve()


def parse_depends(output: str) -> list[str]:
    """The packages named on `Depends:` lines of `apt-cache depends` output, in order."""
    names = []
    for line in output.splitlines():
        key, _, value = line.strip().partition(":")
        if key in ("Depends", "|Depends") and value.strip():
            names.append(value.strip().strip("<>"))
    return names


def parse_version(output: str) -> str | None:
    """The `Version:` of the first stanza of `apt-cache show` output."""
    for line in output.splitlines():
        if line.startswith("Version:"):
            return line.partition(":")[2].strip()
    return None


def resolve_package(package: str) -> str:
    """A kernel meta-package (linux-image-cloud-amd64) names the real, versioned package it depends on."""
    if _REAL_PACKAGE.match(package):
        return package
    out = run(["apt-cache", "depends", package], check=False)
    if out.returncode != 0:
        raise RescueError(
            f"unknown kernel package {package!r}", hint="apt-get update, or name another package"
        )
    for name in parse_depends(out.stdout.decode(errors="replace")):
        if _REAL_PACKAGE.match(name):
            return name
    raise RescueError(f"{package} depends on no linux-image-<version> package")


def package_version(package: str) -> str:
    out = run(["apt-cache", "show", "--no-all-versions", package], check=False)
    version = parse_version(out.stdout.decode(errors="replace")) if out.returncode == 0 else None
    if not version:
        raise RescueError(f"apt knows no version of {package}", hint="apt-get update")
    return version


def host_kernel() -> Kernel:
    """The kernel installed here (chosen_kernel: $RESCUE_KERNEL, else the newest), to boot as it is."""
    found = chosen_kernel(bootable=True)
    if found is None or found.vmlinuz is None:
        raise RescueError(
            "no kernel with modules.dep and a vmlinuz is installed here",
            hint=f"make deps installs linux-image-cloud-amd64; {KERNEL_ENV}=VERSION picks one",
        )
    return Kernel("installed", "", found.version, Path("/"), found.vmlinuz, found.moddir)


def fetch_kernel(package: str = DEFAULT_PACKAGE, cache_dir: Path | None = None) -> Kernel:
    """The unpacked kernel for package, from the cache or downloaded with apt-get into it."""
    cache = (cache_dir or default_cache_dir()) / "kernels"
    real = resolve_package(package)
    deb_version = package_version(real)
    target = cache / f"{real}_{deb_version}"
    if not (target / _READY).is_file():
        _download_and_unpack(real, deb_version, target)
    return _load(real, deb_version, target)


def _download_and_unpack(package: str, deb_version: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Unpack beside the target and rename at the end, so an interrupted run leaves no half kernel behind.
    work = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    try:
        run(["apt-get", "download", f"{package}={deb_version}"], cwd=work, timeout=600)
        debs = sorted(work.glob("*.deb"))
        if len(debs) != 1:
            raise RescueError(f"apt-get download {package} gave {len(debs)} .deb files")
        root = work / "root"
        run(["dpkg-deb", "-x", debs[0], root])
        version = _module_version(root)
        # The .deb ships no modules.dep (its postinst runs depmod); make it for the unpacked tree.
        run(["depmod", "-b", root, version])
        debs[0].unlink()
        (root / _READY).write_text(f"{package} {deb_version} {version}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(root, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _module_version(root: Path) -> str:
    for base in ("lib/modules", "usr/lib/modules"):
        found = sorted(p.name for p in (root / base).glob("*") if p.is_dir())
        if found:
            return found[0]
    raise RescueError(f"{root}: the package has no lib/modules/<version>: not a kernel image package")


def _load(package: str, deb_version: str, root: Path) -> Kernel:
    """The unpacked (and depmod'ed) package as a Kernel: the same lookup as for the host's own kernels."""
    found = [k for k in installed_kernels(root) if k.vmlinuz]
    if not found:
        raise RescueError(f"{package}: no kernel with modules.dep and a vmlinuz in {root}")
    k = found[-1]
    assert k.vmlinuz is not None
    return Kernel(package, deb_version, k.version, root, k.vmlinuz, k.moddir)
