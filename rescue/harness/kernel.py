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
from rescue.harness.apt import Apt, HostApt, SuiteApt, locked
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


def resolve_package(package: str, apt: Apt | None = None) -> str:
    """A kernel meta-package (linux-image-cloud-amd64) names the real, versioned package it depends on."""
    if _REAL_PACKAGE.match(package):
        return package
    out = (apt or HostApt()).cache_query("depends", package)
    if not out:
        raise RescueError(
            f"unknown kernel package {package!r}", hint="apt-get update, or name another package"
        )
    for name in parse_depends(out):
        if _REAL_PACKAGE.match(name):
            return name
    raise RescueError(f"{package} depends on no linux-image-<version> package")


def package_version(package: str, apt: Apt | None = None) -> str:
    version = parse_version((apt or HostApt()).cache_query("show", "--no-all-versions", package))
    if not version:
        raise RescueError(f"apt knows no version of {package}", hint="apt-get update")
    return version


def kernel_packages(real: str, apt: Apt) -> list[str]:
    """`name=version` of real and of every package of the same kernel it depends on, transitively.

    From 7.x, linux-image-ABI is a stub: vmlinuz is in linux-binary-ABI, the modules in linux-modules-ABI,
    the rest in linux-base-ABI. Those are the dependencies whose names end with the same ABI.
    """
    abi = real.removeprefix("linux-image-")
    found: list[str] = []
    queue = [real]
    while queue:
        name = queue.pop(0)
        if any(item.startswith(f"{name}=") for item in found):
            continue
        found.append(f"{name}={package_version(name, apt)}")
        queue += [d for d in parse_depends(apt.cache_query("depends", name)) if d.endswith(f"-{abi}")]
    return found


def host_kernel() -> Kernel:
    """The kernel installed here (chosen_kernel: $RESCUE_KERNEL, else the newest), to boot as it is."""
    found = chosen_kernel(bootable=True)
    if found is None or found.vmlinuz is None:
        raise RescueError(
            "no kernel with modules.dep and a vmlinuz is installed here",
            hint=f"make deps installs linux-image-cloud-amd64; {KERNEL_ENV}=VERSION picks one",
        )
    return Kernel("installed", "", found.version, Path("/"), found.vmlinuz, found.moddir)


def fetch_kernel(
    package: str = DEFAULT_PACKAGE, cache_dir: Path | None = None, *, suite: str | None = None
) -> Kernel:
    """The unpacked kernel for package, from the cache or downloaded with apt-get into it.

    suite names another Debian suite than the host's (e.g. "sid"): apt then runs with a private
    configuration under the cache (rescue.harness.apt), and the host's /etc/apt is only read."""
    cache = cache_dir or default_cache_dir()
    apt: Apt = HostApt() if suite is None else SuiteApt.for_suite(suite, cache)
    apt.update()
    real = resolve_package(package, apt)
    deb_version = package_version(real, apt)
    target = cache / "kernels" / f"{real}_{deb_version}"
    # One process downloads and unpacks; the others (parallel test workers) wait and then find it ready.
    with locked(cache / "kernels" / f".lock-{real}"):
        if not (target / _READY).is_file():
            _download_and_unpack(kernel_packages(real, apt), apt, target)
    return _load(real, deb_version, target)


def _download_and_unpack(packages: list[str], apt: Apt, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Unpack beside the target and rename at the end, so an interrupted run leaves no half kernel behind.
    work = Path(tempfile.mkdtemp(prefix=f".unpack-{target.name}-", dir=target.parent))
    try:
        debs = apt.download(packages, work)
        if len(debs) != len(packages):
            raise RescueError(f"apt-get download {' '.join(packages)} gave {len(debs)} .deb files")
        root = work / "root"
        for deb in debs:
            run(["dpkg-deb", "-x", deb, root])
            deb.unlink()
        if not (root / "lib").exists() and (root / "usr/lib/modules").is_dir():
            # 7.x packages install into /usr/lib/modules; depmod -b looks under BASE/lib/modules, as on a
            # merged-/usr system where /lib is a link to usr/lib.
            (root / "lib").symlink_to("usr/lib")
        version = _module_version(root)
        # The .debs ship no modules.dep (the postinst runs depmod); make it for the unpacked tree.
        run(["depmod", "-b", root, version])
        (root / _READY).write_text(" ".join(packages) + f" {version}\n")
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
