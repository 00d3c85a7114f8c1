"""Fixtures for the qemu tier: one Harness per test session (the installed kernel, images built once)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from rescue.harness.kernel import default_cache_dir
from rescue.harness.matrix import Matrix
from rescue.harness.scenarios import Harness
from tests.conftest import REPO, require


def collector_dir() -> Path:
    # RESCUE_TEST_COLLECTOR points the images at another collector directory (one being developed elsewhere).
    return Path(os.environ.get("RESCUE_TEST_COLLECTOR") or REPO / "hooks" / "collector")


@pytest.fixture(scope="session")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    require(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86 is not installed")
    require(shutil.which("apt-get") is not None, "apt-get is needed to fetch the Debian kernel")
    require(Path("/bin/busybox").is_file(), "busybox-static is not installed")
    require(Path("/usr/lib/klibc/bin/ipconfig").is_file(), "klibc-utils is not installed")
    require(
        shutil.which("mkfs.btrfs", path="/sbin:/usr/sbin:/bin:/usr/bin") is not None, "btrfs-progs missing"
    )
    cache = default_cache_dir() if os.environ.get("RESCUE_CACHE") else REPO / ".cache" / "rescue"
    yield Harness(tmp_path_factory.mktemp("vm"), collector_dir=collector_dir(), cache_dir=cache)


@pytest.fixture
def collector() -> Path:
    directory = collector_dir()
    require((directory / "collect.sh").is_file(), f"the collector {directory}/collect.sh is not there")
    return directory


@pytest.fixture(scope="session")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    """Images and disks for the realism matrix; kernels, chroots and generator images come from the cache,
    shared by parallel workers (file locks)."""
    require(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86 is not installed")
    require(Path("/bin/busybox").is_file(), "busybox-static is not installed")
    cache = default_cache_dir() if os.environ.get("RESCUE_CACHE") else REPO / ".cache" / "rescue"
    return Matrix(tmp_path_factory.mktemp("matrix"), cache_dir=cache, collector_dir=collector_dir())
