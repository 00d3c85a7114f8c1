"""A Debian kernel package (for kernels not installed here): downloaded once, unpacked, depmod'ed, then
served from the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from rescue.harness.kernel import fetch_kernel, host_kernel
from rescue.harness.scenarios import Harness
from rescue.kmod import ModuleDB, version_key

pytestmark = pytest.mark.vm


def test_kernel_is_unpacked_with_modules_dep_and_cached(harness: Harness) -> None:
    first = fetch_kernel(cache_dir=harness.cache_dir)
    assert first.vmlinuz.is_file() and first.vmlinuz.stat().st_size > 1_000_000
    dep = (first.moddir / "modules.dep").read_text()
    btrfs = next(line for line in dep.splitlines() if line.startswith("kernel/fs/btrfs/btrfs.ko"))
    assert "libcrc32c" in btrfs  # the kernel's own metadata, made by depmod -b after unpacking
    ready = first.root / ".ready"
    stamp = ready.stat().st_mtime_ns
    again = fetch_kernel(cache_dir=harness.cache_dir)
    assert again == first
    assert ready.stat().st_mtime_ns == stamp  # served from the cache: not unpacked again
    assert not list(first.root.parent.glob(f".unpack-{first.root.name}-*"))  # no leftovers of an unpack


def _apt_state() -> dict[str, bytes]:
    etc = Path("/etc/apt")
    return {str(p): p.read_bytes() for p in sorted(etc.rglob("*")) if p.is_file()}


def test_sid_kernel_is_every_package_of_it_with_a_private_apt_config(harness: Harness) -> None:
    """sid's kernel: linux-image-* is a stub; its binary, modules and base packages come along, the modules
    under usr/lib/modules with vmlinuz inside, and the host's apt configuration is never touched."""
    before = _apt_state()
    kernel = fetch_kernel(cache_dir=harness.cache_dir, suite="sid")
    assert _apt_state() == before
    packages = (kernel.root / ".ready").read_text().split()
    abi = kernel.package.removeprefix("linux-image-")
    for kind in ("image", "binary", "modules", "base"):
        assert any(p.startswith(f"linux-{kind}-{abi}=") for p in packages), packages
    assert kernel.vmlinuz.name == "vmlinuz" and kernel.vmlinuz.parent.name == kernel.version
    assert (kernel.root / "usr/lib/modules" / kernel.version / "modules.dep").is_file()
    db = ModuleDB.load(kernel.moddir)
    assert "btrfs" in db.paths and db.deps_of["btrfs"], "depmod made the kernel's own modules.dep"
    assert (harness.cache_dir / "apt" / "sid" / "lists").is_dir()
    assert version_key(kernel.version) > version_key(host_kernel().version)
