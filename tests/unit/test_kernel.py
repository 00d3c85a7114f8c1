"""Resolving a Debian kernel package: parsers on real apt-cache output shapes, and apt itself when present."""

from __future__ import annotations

import shutil

import pytest

from rescue.errors import RescueError
from rescue.kernel import DEFAULT_PACKAGE, parse_depends, parse_version, resolve_package
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
