"""The collector's disk evidence under busybox-static's ash against a fake root: devices.txt (devices no
driver has bound, the module that would drive them and whether the image has it) and storage.txt."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.collector_root import COLLECTOR, FakeRoot, build, run_collector
from tests.conftest import require
from tests.host_kernel import HOST_MODDIR

VIRTIO_BLK = "virtio:d00000002v00001AF4"
DISK_PATH = "/sys/devices/pci0000:00/0000:00:04.0/virtio1"


@pytest.fixture(autouse=True)
def _kernel() -> None:
    require((HOST_MODDIR / "modules.dep").is_file(), f"{HOST_MODDIR} is missing (linux-image-cloud-amd64)")


def add_device(fake: FakeRoot, bus: str, name: str, sysfs: str, modalias: str, *, bound: bool = False,
               pci_class: str | None = None) -> None:  # fmt: skip
    real = fake.path / sysfs.lstrip("/")
    real.mkdir(parents=True, exist_ok=True)
    (real / "modalias").write_text(modalias + "\n")
    if pci_class:
        (real / "class").write_text(pci_class + "\n")
    if bound:
        (real / "driver").mkdir()
    link = fake.path / "sys" / "bus" / bus / "devices" / name
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(real, link.parent), link)


def collector_with_kernel_aliases(tmp_path: Path) -> Path:
    """A copy of the collector with kernel.alias beside it, as the build hooks put it in an image."""
    copy = tmp_path / "collector"
    shutil.copytree(COLLECTOR.parent, copy)
    lines = [line for line in (HOST_MODDIR / "modules.alias").read_text().splitlines()
             if line.startswith(("alias pci:", "alias virtio:"))]  # fmt: skip
    (copy / "kernel.alias").write_text("\n".join(lines) + "\n")
    return copy / "collect.sh"


def devices(fake: FakeRoot) -> list[str]:
    return (fake.bundle / "devices.txt").read_text().splitlines()


def test_a_disk_without_its_driver_names_the_module_the_image_lacks(busybox: str, tmp_path: Path) -> None:
    fake = build(tmp_path, cmdline="root=/dev/vda")
    add_device(fake, "virtio", "virtio1", DISK_PATH, VIRTIO_BLK)
    pci = "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"
    add_device(
        fake, "pci", "0000:00:04.0", DISK_PATH.rsplit("/", 1)[0], pci, bound=True, pci_class="0x010000"
    )
    run_collector(busybox, fake, "test", collector=collector_with_kernel_aliases(tmp_path))
    # The bound PCI function is not listed; its virtio disk, with no driver, is.
    assert devices(fake) == [f"{DISK_PATH} class=- modalias={VIRTIO_BLK} module=virtio_blk in_image=no"]


def test_the_module_is_unknown_without_the_kernels_aliases(busybox: str, tmp_path: Path) -> None:
    fake = build(tmp_path, cmdline="root=/dev/vda")
    add_device(fake, "virtio", "virtio1", DISK_PATH, VIRTIO_BLK)
    run_collector(busybox, fake, "test")
    assert devices(fake) == [f"{DISK_PATH} class=- modalias={VIRTIO_BLK} module=- in_image=-"]


def test_a_driver_in_the_image_but_not_bound(busybox: str, tmp_path: Path) -> None:
    fake = build(tmp_path, roots=("btrfs", "virtio_blk"), cmdline="root=/dev/vda")
    add_device(fake, "virtio", "virtio1", DISK_PATH, VIRTIO_BLK)
    run_collector(busybox, fake, "test")
    assert devices(fake) == [f"{DISK_PATH} class=- modalias={VIRTIO_BLK} module=virtio_blk in_image=yes"]


def test_storage_txt_has_mdstat_tools_and_for_a_missing_root_what_exists(
    busybox: str, tmp_path: Path
) -> None:
    fake = build(tmp_path, cmdline="root=UUID=0000-missing")
    (fake.path / "proc" / "mdstat").write_text("Personalities : [raid1]\nmd0 : inactive vdb1[0](S)\n")
    run_collector(busybox, fake, "test")
    text = (fake.bundle / "storage.txt").read_text()
    assert "md0 : inactive vdb1[0](S)" in text
    assert "--- lvm: not in the image" in text and "--- zpool: not in the image" in text
    assert "--- /dev/disk/by-uuid\n0f5bb0a8-4e5e-4c1e-9d0e-6b1b8c6d2a11\n" in text
    assert "the root (UUID=0000-missing) is missing; the file systems that exist (blkid):" in text
    assert 'UUID="0f5bb0a8-4e5e-4c1e-9d0e-6b1b8c6d2a11"' in text.split("is missing")[1]
