"""Kernels: the installed ones in version order, and resolving a Debian kernel package (parsers on real
apt-cache output shapes, and apt itself when present)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rescue.errors import RescueError
from rescue.harness.kernel import DEFAULT_PACKAGE, parse_depends, parse_version, resolve_package
from rescue.kmod import KERNEL_ENV, chosen_kernel, installed_kernels, version_key
from tests.conftest import require

# In version order; a string sort puts -10 before -9 (tests/data/kernel-versions.txt).
VERSIONS = [
    line
    for line in (Path(__file__).parent.parent / "data" / "kernel-versions.txt").read_text().splitlines()
    if line and not line.startswith("#")
]

DEPENDS = """linux-image-cloud-amd64
  Depends: linux-image-6.1.0-56-cloud-amd64
 |Depends: <linux-image-6.1.0-55-cloud-amd64>
  Recommends: firmware-linux-free
"""


def test_parse_depends_lists_depends_only() -> None:
    assert parse_depends(DEPENDS) == ["linux-image-6.1.0-56-cloud-amd64", "linux-image-6.1.0-55-cloud-amd64"]


def test_parse_version_takes_the_first_stanza() -> None:
    assert parse_version("Package: x\nVersion: 6.1.192-2\n\nPackage: x\nVersion: 6.1.1-1\n") == "6.1.192-2"
    assert parse_version("Package: x\n") is None


def test_a_versioned_package_is_its_own_resolution() -> None:
    assert resolve_package("linux-image-6.1.0-56-cloud-amd64") == "linux-image-6.1.0-56-cloud-amd64"


def test_meta_package_resolves_through_apt_cache() -> None:
    require(shutil.which("apt-cache") is not None, "apt-cache is not installed")
    real = resolve_package(DEFAULT_PACKAGE)
    assert real.startswith("linux-image-") and real.endswith("-cloud-amd64") and real != DEFAULT_PACKAGE


def test_unknown_package_is_one_clear_error() -> None:
    require(shutil.which("apt-cache") is not None, "apt-cache is not installed")
    with pytest.raises(RescueError, match="unknown kernel package"):
        resolve_package("linux-image-no-such-flavour-zz")


def test_kernel_versions_sort_by_their_numbers() -> None:
    assert sorted(VERSIONS) != VERSIONS  # the data holds a case a string sort gets wrong
    assert sorted(reversed(VERSIONS), key=version_key) == VERSIONS
    assert sorted(sorted(VERSIONS), key=version_key) == VERSIONS


def _kernel(root: Path, version: str, *, dep: bool = True, vmlinuz: str | None = "boot") -> None:
    moddir = root / "lib" / "modules" / version
    moddir.mkdir(parents=True)
    if dep:
        (moddir / "modules.dep").write_text("")
    if vmlinuz == "boot":
        (root / "boot").mkdir(exist_ok=True)
        (root / "boot" / f"vmlinuz-{version}").write_bytes(b"k")
    elif vmlinuz == "moddir":  # Debian's 7.x packaging keeps vmlinuz in the modules directory
        (moddir / "vmlinuz").write_bytes(b"k")


def test_installed_kernels_need_modules_dep_and_come_oldest_first(tmp_path: Path) -> None:
    _kernel(tmp_path, VERSIONS[2])
    _kernel(tmp_path, VERSIONS[1])
    _kernel(tmp_path, VERSIONS[-1], vmlinuz="moddir")  # Debian 7.x
    _kernel(tmp_path, VERSIONS[4], dep=False)  # a leftover directory, no modules.dep
    _kernel(tmp_path, VERSIONS[3], vmlinuz=None)  # modules without a kernel image
    found = installed_kernels(tmp_path)
    assert [k.version for k in found] == [VERSIONS[1], VERSIONS[2], VERSIONS[3], VERSIONS[-1]]
    assert found[-1].vmlinuz == tmp_path / "lib/modules" / VERSIONS[-1] / "vmlinuz"
    assert found[2].vmlinuz is None


def test_chosen_kernel_is_the_newest_or_the_one_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, bootable, newest, missing = VERSIONS[1], VERSIONS[2], VERSIONS[3], VERSIONS[-1]
    _kernel(tmp_path, old)
    _kernel(tmp_path, bootable)
    _kernel(tmp_path, newest, vmlinuz=None)
    monkeypatch.delenv(KERNEL_ENV, raising=False)
    assert chosen_kernel(tmp_path).version == newest  # type: ignore[union-attr]
    assert chosen_kernel(tmp_path, bootable=True).version == bootable  # type: ignore[union-attr]
    monkeypatch.setenv(KERNEL_ENV, old)
    assert chosen_kernel(tmp_path).version == old  # type: ignore[union-attr]
    monkeypatch.setenv(KERNEL_ENV, missing)
    assert chosen_kernel(tmp_path) is None  # named but not installed: the caller says so
