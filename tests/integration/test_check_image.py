"""check-image on real images: this host's own initrd, mkinitramfs builds with and without libcrc32c, dracut.

The listing is cross-checked against lsinitramfs (initramfs-tools' own reader) on the same image.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rescue.image.check import check_image
from rescue.image.initrd import read_initrd
from rescue.run import run
from tests.conftest import require
from tests.host_kernel import KVER, ko
from tests.integration.images import build_dracut_image, build_initramfs_tools_image

HOST_INITRD = Path(f"/boot/initrd.img-{KVER}")


def _need_kernel() -> None:
    require((Path("/lib/modules") / KVER / "modules.dep").is_file(), f"linux-image {KVER} is not installed")


def _need(tool: str) -> None:
    require(shutil.which(tool) is not None, f"{tool} is not installed")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """One normal and one libcrc32c-less mkinitramfs image, built one after the other."""
    _need_kernel()
    _need("mkinitramfs")
    out = tmp_path_factory.mktemp("images")
    yield {
        "normal": build_initramfs_tools_image(out / "normal.img", KVER),
        "nocrc": build_initramfs_tools_image(out / "nocrc.img", KVER, drop_modules=["libcrc32c"]),
    }


def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return run([sys.executable, "-m", "rescue", "check-image", *args], check=False, timeout=120)


def test_host_initrd_lists_like_lsinitramfs() -> None:
    require(HOST_INITRD.is_file(), f"{HOST_INITRD} does not exist")
    _need("lsinitramfs")
    theirs = {
        ln for ln in run(["lsinitramfs", HOST_INITRD]).stdout.decode().splitlines() if ln not in ("", ".")
    }
    ours = set(read_initrd(HOST_INITRD).names())
    assert ours == theirs


def test_host_initrd_has_what_btrfs_needs() -> None:
    require(HOST_INITRD.is_file(), f"{HOST_INITRD} does not exist")
    _need_kernel()
    report = check_image(HOST_INITRD, require=["btrfs"])
    assert not report.has_errors, report.render()
    status = {n["name"]: n["status"] for n in report.to_json()["closure"]}
    assert status["btrfs"] == status["libcrc32c"] == "in-image"


@pytest.mark.image
def test_mkinitramfs_image_with_libcrc32c_passes(images: dict[str, Path]) -> None:
    proc = _cli(str(images["normal"]), "--require", "btrfs", "--json")
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    doc = json.loads(proc.stdout)
    assert doc["generator"] == "initramfs-tools" and doc["kernel"] == KVER
    assert not [f for f in doc["findings"] if f["severity"] == "error"]


@pytest.mark.image
def test_mkinitramfs_image_without_libcrc32c_fails_with_the_fix(images: dict[str, Path]) -> None:
    image = read_initrd(images["nocrc"])
    moddir = f"usr/lib/modules/{KVER}"
    # The premise: depmod inside mkinitramfs left a consistent modules.dep with a hole in it.
    btrfs_dep = next(ln for ln in image.read_text(f"{moddir}/modules.dep").splitlines() if "btrfs.ko:" in ln)
    assert "libcrc32c" not in btrfs_dep and not image.exists(f"{moddir}/{ko('kernel/lib/libcrc32c.ko')}")

    proc = _cli(str(images["nocrc"]), "--require", "btrfs")
    out = proc.stdout.decode()
    assert proc.returncode == 1, out + proc.stderr.decode()
    assert "[btrfs-crc32c-missing]" in out
    assert "echo libcrc32c >> /etc/initramfs-tools/modules" in out
    assert f"update-initramfs -u -k {KVER}" in out
    assert all(len(line) <= 80 for line in out.splitlines())
    proc = _cli(str(images["nocrc"]), "--require", "btrfs", "--json")
    doc = json.loads(proc.stdout)
    assert doc["findings"][0]["id"] == "btrfs-crc32c-missing"


@pytest.mark.image
def test_dracut_image_without_libcrc32c(tmp_path: Path) -> None:
    _need_kernel()
    _need("dracut")
    image = build_dracut_image(tmp_path / "dracut.img", KVER, omit_drivers=["libcrc32c"])
    report = check_image(image, require=["btrfs"])
    assert report.generator == "dracut"
    assert [f.id for f in report.findings if f.severity == "error"] == ["btrfs-crc32c-missing"]
    fix = report.findings[0].fix["dracut"]
    assert 'add_drivers+=" libcrc32c "' in fix and f"dracut --force --kver {KVER}" in fix
    assert "fix (dracut)" in report.render()
