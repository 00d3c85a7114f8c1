"""Another Debian suite's initramfs generators (sid: initramfs-tools 0.151, dracut 112) in a cached chroot.

`debootstrap --variant=minbase SUITE` from the mirror the host's apt uses, then apt-get inside the chroot
installs the generators and what the hooks put into images (busybox-static, klibc-utils) and btrfs-progs.
The chroot is built once under `.cache/rescue/chroots/SUITE-<package hash>` (a file lock lets one process
build while the others wait) and reused; a kernel's modules are linked into it on demand. Commands run in a
private mount namespace (`unshare --mount`) with /proc, /sys and /dev bound in: nothing stays mounted
when they end, whatever happens.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rescue.errors import RescueError
from rescue.harness.apt import locked, mirror_from_sources, validity_options
from rescue.harness.kernel import Kernel
from rescue.run import run

PACKAGES = (
    "initramfs-tools",
    "dracut-core",
    "systemd",
    "systemd-sysv",
    "udev",
    "busybox-static",
    "klibc-utils",
    "btrfs-progs",
    "kmod",
    "cpio",
    "zstd",
    "bash",
)
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
       "HOME": "/root"}  # fmt: skip
_READY = ".ready"
# Bind the host's /proc, /sys and /dev into the chroot inside a new mount namespace, then chroot.
_ENTER = (
    'root=$1; shift; mount -t proc proc "$root/proc" && mount --rbind /sys "$root/sys" '
    '&& mount --rbind /dev "$root/dev" && exec chroot "$root" "$@"'
)


def chroot_dir(cache_dir: Path, suite: str, packages: Sequence[str] = PACKAGES) -> Path:
    digest = hashlib.sha256(" ".join(sorted(packages)).encode()).hexdigest()[:10]
    return cache_dir / "chroots" / f"{suite}-{digest}"


def in_chroot(root: Path, argv: Sequence[str | Path], *, timeout: float = 900) -> bytes:
    """Run argv inside the chroot (with /proc, /sys, /dev); its stdout."""
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _ENTER, "enter", root, *argv]
    return run(cmd, env=ENV, timeout=timeout).stdout


def suite_chroot(cache_dir: Path, suite: str = "sid", packages: Sequence[str] = PACKAGES) -> Path:
    """The chroot of suite with packages installed: from the cache, or built now."""
    root = chroot_dir(cache_dir, suite, packages)
    with locked(root.parent / f".lock-{root.name}"):
        if not (root / _READY).is_file():
            _build(root, suite, packages)
    return root


def _build(root: Path, suite: str, packages: Sequence[str]) -> None:
    if shutil.which("debootstrap", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
        raise RescueError("debootstrap not found", hint="install debootstrap (make deps)")
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        tree = work / "root"
        run(["debootstrap", "--variant=minbase", suite, tree, mirror_from_sources()], env=ENV, timeout=1800)
        # Nothing may start a daemon inside the chroot; the generators' postinst triggers need no kernel.
        policy = tree / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        # A Release past its Valid-Until is accepted (apt.validity_options says why).
        apt = ["apt-get", *validity_options()]
        in_chroot(tree, [*apt, "-q", "update"])
        in_chroot(tree, [*apt, "install", "-y", "-q", "--no-install-recommends", *packages], timeout=1800)
        in_chroot(tree, ["apt-get", "clean"])
        (tree / _READY).write_text(" ".join(packages) + "\n")
        if root.exists():
            shutil.rmtree(root)
        os.replace(tree, root)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def install_kernel(root: Path, kernel: Kernel) -> str:
    """Put kernel's modules (and config) into the chroot, as its packages would; the version."""
    target = root / "usr/lib/modules" / kernel.version
    with locked(root.parent / f".lock-{root.name}-{kernel.version}"):
        if not (target / "modules.dep").is_file():
            part = target.with_name(f".{kernel.version}.partial")
            shutil.rmtree(part, ignore_errors=True)
            part.parent.mkdir(parents=True, exist_ok=True)
            # Hard links: the cache and the chroot share one file system, and nothing edits a module.
            run(["cp", "-al", kernel.moddir.resolve(), part])
            os.replace(part, target)
        config = kernel.moddir / "config"
        boot_config = root / "boot" / f"config-{kernel.version}"
        if config.is_file() and not boot_config.exists():
            shutil.copyfile(config, boot_config)  # mkinitramfs checks the kernel's compression support
    return kernel.version
