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
    versions = ["6.1.0-9-cloud-amd64", "6.12.57+deb12-cloud-amd64", "6.1.0-10-cloud-amd64", "5.10.0-30-amd64"]
    assert sorted(versions, key=version_key) == [
        "5.10.0-30-amd64",
        "6.1.0-9-cloud-amd64",
        "6.1.0-10-cloud-amd64",  # a string sort puts -10 before -9
        "6.12.57+deb12-cloud-amd64",
    ]


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
    _kernel(tmp_path, "6.1.0-10-cloud-amd64")
    _kernel(tmp_path, "6.1.0-9-cloud-amd64")
    _kernel(tmp_path, "7.2.13+deb14-cloud-amd64", vmlinuz="moddir")
    _kernel(tmp_path, "6.2.0-1-amd64", dep=False)  # a leftover directory, no modules.dep
    _kernel(tmp_path, "6.1.0-11-amd64", vmlinuz=None)  # modules without a kernel image
    found = installed_kernels(tmp_path)
    assert [k.version for k in found] == [
        "6.1.0-9-cloud-amd64",
        "6.1.0-10-cloud-amd64",
        "6.1.0-11-amd64",
        "7.2.13+deb14-cloud-amd64",
    ]
    assert found[-1].vmlinuz == tmp_path / "lib/modules/7.2.13+deb14-cloud-amd64/vmlinuz"
    assert found[2].vmlinuz is None


def test_chosen_kernel_is_the_newest_or_the_one_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _kernel(tmp_path, "6.1.0-9-cloud-amd64")
    _kernel(tmp_path, "6.1.0-10-cloud-amd64")
    _kernel(tmp_path, "6.1.0-11-amd64", vmlinuz=None)
    monkeypatch.delenv(KERNEL_ENV, raising=False)
    assert chosen_kernel(tmp_path).version == "6.1.0-11-amd64"  # type: ignore[union-attr]
    assert chosen_kernel(tmp_path, bootable=True).version == "6.1.0-10-cloud-amd64"  # type: ignore[union-attr]
    monkeypatch.setenv(KERNEL_ENV, "6.1.0-9-cloud-amd64")
    assert chosen_kernel(tmp_path).version == "6.1.0-9-cloud-amd64"  # type: ignore[union-attr]
    monkeypatch.setenv(KERNEL_ENV, "6.1.0-99-cloud-amd64")
    assert chosen_kernel(tmp_path) is None  # named but not installed: the caller says so
