"""hooks/collector/modcheck.awk on its own, under busybox awk -f, with small metadata files in the formats
depmod, the kernel and the collector write them (the collector feeds it the same way; see walk_modules)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import BUSYBOX, REPO

AWK = REPO / "hooks" / "collector" / "modcheck.awk"
INPUTS = ("DEP", "SOFT", "ALIAS", "BUILTIN", "BINFO", "LOADED", "FILES", "KODEPS", "CRYPTO")

# An image whose libcrc32c.ko was removed before depmod ran again: its modules.dep no longer names it, but
# btrfs.ko's own depends= (what the collector reads into kodeps) still does.
HOLE = {
    "DEP": "kernel/fs/btrfs/btrfs.ko.xz: kernel/crypto/xor.ko.xz kernel/lib/raid6/raid6_pq.ko.xz\n"
    "kernel/crypto/xor.ko.xz:\nkernel/lib/raid6/raid6_pq.ko.xz:\n",
    "SOFT": "softdep btrfs pre: crc32c\n",
    "ALIAS": "alias fs-btrfs btrfs\nalias devname:btrfs-control btrfs\n",
    "BUILTIN": "kernel/crypto/crc32c_generic.ko\n",
    "BINFO": "crc32c_generic.alias=crc32c\0crc32c_generic.alias=crypto-crc32c\0",
    "LOADED": "",
    "FILES": "kernel/fs/btrfs/btrfs.ko.xz\nkernel/crypto/xor.ko.xz\nkernel/lib/raid6/raid6_pq.ko.xz\n",
    "KODEPS": "kernel/fs/btrfs/btrfs.ko.xz libcrc32c,xor,raid6_pq\n",
    "CRYPTO": "name         : crc32c\ndriver       : crc32c-generic\nmodule       : kernel\n",
}


def modcheck(tmp_path: Path, files: dict[str, str], rootfs: str = "btrfs", csum: str = "") -> list[str]:
    for key in INPUTS:
        (tmp_path / key).write_text(files.get(key, ""))
    out = {k: tmp_path / k.lower() for k in ("OUT", "DEPOUT", "FOLLOW")}
    variables = {"ROOTFS": rootfs, "CSUM": csum, "FSTYPE": rootfs, "SOURCE": "test", **out}
    variables.update({key: tmp_path / key for key in INPUTS})
    argv = [BUSYBOX, "awk", "-f", str(AWK)]
    for name, value in variables.items():
        argv += ["-v", f"{name}={value}"]
    subprocess.run([*argv, *(str(tmp_path / k) for k in INPUTS)], check=True, capture_output=True, timeout=30)
    return out["OUT"].read_text().splitlines()


@pytest.fixture(autouse=True)
def _busybox(busybox: str) -> None:
    """busybox-static's awk, as in the initramfs (the fixture skips, or fails in CI, without it)."""


def test_the_hole_is_named_from_the_module_s_own_depends(tmp_path: Path) -> None:
    lines = modcheck(tmp_path, HOLE)
    assert "need btrfs root - available" in lines
    assert "need libcrc32c dep btrfs missing" in lines
    assert "need crc32c softdep btrfs builtin crc32c_generic" in lines
    assert "crypto crc32c present driver=crc32c-generic" in lines
    assert lines[-1] == "result fail missing=libcrc32c"


def test_with_libcrc32c_in_the_image_the_check_passes(tmp_path: Path) -> None:
    files = dict(HOLE)
    files["DEP"] += "kernel/lib/libcrc32c.ko.xz:\n"
    files["FILES"] += "kernel/lib/libcrc32c.ko.xz\n"
    lines = modcheck(tmp_path, files)
    assert "need libcrc32c dep btrfs available" in lines
    assert lines[-1] == "result ok"


def test_the_root_s_own_checksum_driver_is_required_and_others_are_not(tmp_path: Path) -> None:
    files = dict(HOLE, SOFT="softdep btrfs pre: crc32c xxhash64 sha256\n")
    files["DEP"] += "kernel/lib/libcrc32c.ko.xz:\n"
    files["FILES"] += "kernel/lib/libcrc32c.ko.xz\n"
    assert (
        modcheck(tmp_path, files)[-1] == "result ok"
    )  # xxhash64, sha256: only for filesystems that use them
    assert modcheck(tmp_path, files, csum="xxhash64")[-1] == "result fail missing=xxhash64"


def test_an_unknown_root_type_checks_nothing(tmp_path: Path) -> None:
    lines = modcheck(tmp_path, HOLE, rootfs="")
    assert lines[-1] == "result ok" and any("unknown" in line for line in lines)
