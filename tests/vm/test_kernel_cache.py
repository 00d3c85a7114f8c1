"""A Debian kernel package (for kernels not installed here): downloaded once, unpacked, depmod'ed, then
served from the cache."""

from __future__ import annotations

import pytest

from rescue.harness.kernel import fetch_kernel
from rescue.harness.scenarios import Harness

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
    assert not list(first.root.parent.glob(".unpack-*"))  # no leftovers of an unpack
