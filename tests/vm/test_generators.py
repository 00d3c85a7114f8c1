"""Scenarios 5 and 6: images made by the real generators (mkinitramfs, dracut) with the hooks installed,
booted under qemu with a broken btrfs root or a missing root; the image's own collector must send."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rescue.harness.scenarios import Harness
from tests.conftest import Listener, require
from tests.host_kernel import KERNEL, MISSING
from tests.vm.helpers import assert_stored_intact, text

pytestmark = [pytest.mark.vm, pytest.mark.image]


def need_generator(harness: Harness, tool: str, package: str) -> None:
    require(
        shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is not None, f"{package} is not installed"
    )
    require(KERNEL is not None and KERNEL.vmlinuz is not None, MISSING)


def check_bundle(listener: Listener, generator: str) -> tuple[dict[str, object], list[str]]:
    event = listener.wait_for("capture")
    man = assert_stored_intact(event)
    assert man["kind"] in ("header+tar", "header+gzip"), man["kind"]
    assert man["sha256sums"] == "verified"
    info = text(event, "info.txt").splitlines()
    assert f"GENERATOR={generator}" in info, info
    return event, info


def test_5_mkinitramfs_image_broken_btrfs(harness: Harness, listener: Listener, collector: Path) -> None:
    need_generator(harness, "mkinitramfs", "initramfs-tools")
    result = harness.mkinitramfs_broken_btrfs(listener.port)
    assert result.end and result.end.startswith("rescue: sent"), result.log_path
    event, _ = check_bundle(listener, "initramfs-tools")
    assert "Unknown symbol crc32c" in text(event, "dmesg.txt")
    assert "need libcrc32c dep btrfs missing" in text(event, "modcheck.txt")
    assert "btrfs-crc32c-missing" in event["findings"], event


def test_5_mkinitramfs_image_missing_root(harness: Harness, listener: Listener, collector: Path) -> None:
    need_generator(harness, "mkinitramfs", "initramfs-tools")
    result = harness.mkinitramfs_missing_root(listener.port)
    assert result.end and result.end.startswith("rescue: sent"), result.log_path
    event, info = check_bundle(listener, "initramfs-tools")
    assert "ROOT=/dev/vdb" in info
    assert "root-device-missing" in event["findings"], event


def test_6_dracut_image_broken_btrfs(harness: Harness, listener: Listener, collector: Path) -> None:
    need_generator(harness, "dracut", "dracut-core")
    result = harness.dracut_broken_btrfs(listener.port)
    assert result.end and result.end.startswith("rescue: sent"), result.log_path
    event, _ = check_bundle(listener, "dracut")
    assert "need libcrc32c dep btrfs missing" in text(event, "modcheck.txt")
    assert "btrfs-crc32c-missing" in event["findings"], event
