"""devices.txt read by the diagnosis: a disk controller without its driver names the module, and with the
root missing too, storage-driver-missing names it (virtio_blk, nvme) when that controller can carry the root
the boot names; another controller without its driver stays a warning of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from rescue.diagnose.analyze import analyze_path, analyze_text
from rescue.diagnose.findings import Finding
from rescue.diagnose.rules.storage import carries_root

DISK = "/sys/devices/pci0000:00/0000:00:04.0/virtio1 class=- modalias=virtio:d00000002v00001AF4"
NVME = "/sys/devices/pci0000:00/0000:00:05.0 class=0x010802 modalias=pci:v00008086d00000953sv0sd0bc01sc08i02"
BALLOON = "/sys/devices/pci0000:00/0000:00:06.0/virtio2 class=- modalias=virtio:d00000005v00001AF4"
# qemu's `pc` IDE controller (PIIX3: [8086:7010] class 0x010180 in the recorded dmesg), q35's AHCI (ICH9)
IDE = (
    "/sys/devices/pci0000:00/0000:00:01.1 class=0x010180"
    " modalias=pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80"
)
AHCI = (
    "/sys/devices/pci0000:00/0000:00:1f.2 class=0x010601"
    " modalias=pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"
)


def missing(root: str) -> str:
    return f"# rescue modcheck 1\nfstype unknown source=none\nrootdev {root} missing\nresult ok\n"


ROOT_MISSING = missing("/dev/vda")


def capture(tmp_path: Path, devices: str, modcheck: str = ROOT_MISSING) -> dict[str, Finding]:
    (tmp_path / "dmesg.txt").write_text("[    0.000000] Linux version 6.1.0-57-cloud-amd64 (gcc)\n")
    (tmp_path / "devices.txt").write_text(devices)
    (tmp_path / "modcheck.txt").write_text(modcheck)
    return {f.id: f for f in analyze_path(tmp_path).findings}


def test_missing_root_and_a_disk_without_its_driver_name_virtio_blk(tmp_path: Path) -> None:
    found = capture(tmp_path, f"{DISK} module=virtio_blk in_image=no\n")
    # The root cause, an error with the device's line: the warning it derives from is not said twice.
    assert set(found) == {"root-device-missing", "storage-driver-missing"}
    storage = found["storage-driver-missing"]
    assert storage.params["module"] == ["virtio_blk"] and storage.caused_by is None
    assert storage.severity == "error" and any("virtio1" in e.text for e in storage.evidence)
    assert "virtio_blk" in storage.fix["initramfs-tools"]
    assert found["root-device-missing"].caused_by == "storage-driver-missing"


def test_a_typo_in_a_virtio_root_is_not_blamed_on_the_ide_controller(tmp_path: Path) -> None:
    # qemu's `pc` machine always has an IDE controller; an image without ata_piix does not keep /dev/vdb away
    found = capture(tmp_path, f"{IDE} module=ata_piix in_image=no\n", missing("/dev/vdb"))
    assert set(found) == {"root-device-missing", "device-driver-missing"}
    root = found["root-device-missing"]
    assert root.caused_by is None and root.severity == "error" and root.params["device"] == ["/dev/vdb"]
    ide = found["device-driver-missing"]
    assert ide.severity == "warning" and ide.params["module"] == ["ata_piix"]
    assert any("0000:00:01.1" in e.text for e in ide.evidence)


def test_only_the_root_disks_controller_is_the_cause_the_other_stays_a_warning(tmp_path: Path) -> None:
    devices = f"{IDE} module=ata_piix in_image=no\n{DISK} module=virtio_blk in_image=no\n"
    found = capture(tmp_path, devices)
    assert set(found) == {"root-device-missing", "storage-driver-missing", "device-driver-missing"}
    assert found["storage-driver-missing"].params["module"] == ["virtio_blk"]
    assert "ata_piix" not in found["storage-driver-missing"].fix["dracut"]
    assert found["device-driver-missing"].params["module"] == ["ata_piix"]


def test_a_sata_root_without_ahci(tmp_path: Path) -> None:
    found = capture(tmp_path, f"{AHCI} module=ahci in_image=no\n", missing("/dev/sda2"))
    assert found["storage-driver-missing"].params["module"] == ["ahci"]
    assert found["root-device-missing"].caused_by == "storage-driver-missing"
    assert "device-driver-missing" not in found


def test_an_nvme_root_is_not_kept_away_by_a_virtio_disk(tmp_path: Path) -> None:
    found = capture(tmp_path, f"{DISK} module=virtio_blk in_image=no\n", missing("/dev/nvme0n1p2"))
    assert set(found) == {"root-device-missing", "device-driver-missing"}
    assert found["root-device-missing"].caused_by is None


def test_a_root_named_by_uuid_can_be_on_any_controller(tmp_path: Path) -> None:
    root = "UUID=4e1f6a55-7d8c-4a8e-9a53-0d2f4d6f9b11"
    found = capture(tmp_path, f"{NVME} module=nvme in_image=no\n", missing(root))
    assert set(found) == {"root-device-missing", "storage-driver-missing"}
    assert found["storage-driver-missing"].params["module"] == ["nvme"]


def test_the_root_from_info_txt_when_no_line_names_it(tmp_path: Path) -> None:
    (tmp_path / "info.txt").write_text("KERNEL=6.1.0-57-cloud-amd64\nROOT=/dev/vdb\n")
    (tmp_path / "console.log").write_text("Gave up waiting for root device.  Common problems:\n")
    found = capture(tmp_path, f"{IDE} module=ata_piix in_image=no\n", "# rescue modcheck 1\nresult ok\n")
    assert set(found) == {"root-device-missing", "device-driver-missing"}
    assert found["root-device-missing"].params["device"] == ["/dev/vdb"]
    (tmp_path / "info.txt").write_text("KERNEL=6.1.0-57-cloud-amd64\nROOT=/dev/sda1\n")
    found = capture(tmp_path, f"{IDE} module=ata_piix in_image=no\n", "# rescue modcheck 1\nresult ok\n")
    assert found["storage-driver-missing"].params["module"] == ["ata_piix"]


@pytest.mark.parametrize(("root", "blamed"), [("/dev/nvme0n1p2", True), ("block:/dev/vda1", False)])
def test_the_root_from_the_kernel_command_line_of_a_log(root: str, blamed: bool) -> None:
    log = (
        f"[    0.000000] Kernel command line: BOOT_IMAGE=/vmlinuz ro root={root} quiet\n"
        "[    2.100000] modprobe: FATAL: Module nvme not found in directory /lib/modules/6.1.0-57-amd64\n"
        "[   32.000000] Gave up waiting for root device.  Common problems:\n"
    )
    ids = {f.id for f in analyze_text(log).findings}
    assert {"root-device-missing", "module-missing"} <= ids
    assert ("storage-driver-missing" in ids) is blamed


@pytest.mark.parametrize(
    ("module", "root", "carries"),
    [
        ("virtio_blk", "/dev/vda", True),
        ("virtio_pci", "/dev/vdb3", True),
        ("ata_piix", "/dev/vdb", False),
        ("ahci", "/dev/sda", True),
        ("pata_acpi", "sdb1", True),
        ("virtio_scsi", "/dev/sdc", True),
        ("usb_storage", "/dev/sda1", True),
        ("virtio_blk", "/dev/sda1", False),
        ("nvme", "/dev/nvme0n1p2", True),
        ("nvme_core", "/dev/nvme1n1", True),
        ("virtio_blk", "/dev/nvme0n1p2", False),
        ("xen_blkfront", "/dev/xvda1", True),
        ("virtio_blk", "/dev/xvda1", False),
        ("sdhci_pci", "/dev/mmcblk0p2", True),
        ("mmc_block", "/dev/mmcblk0", True),
        ("ahci", "/dev/mmcblk0p2", False),
        ("ata_piix", "/dev/hda1", True),
        ("nvme", "/dev/hda1", False),
        ("nvme", "UUID=4e1f6a55", True),
        ("ahci", "LABEL=root", True),
        ("virtio_blk", "PARTUUID=0b30-02", True),
        ("mpt3sas", "/dev/disk/by-uuid/4e1f6a55", True),
        ("nvme", "/dev/mapper/vg-root", True),
        ("ahci", "/dev/md0", True),
        ("virtio_pci", "UUID=4e1f6a55", False),  # the transport of virtio NICs too: only for a /dev/vd* root
    ],
)
def test_which_controller_carries_which_root(module: str, root: str, carries: bool) -> None:
    assert carries_root(module, {"device": [root]}) is carries


def test_an_unnamed_root_can_be_on_any_controller() -> None:
    assert carries_root("ata_piix", {}) and carries_root("ata_piix", {"device": []})
    assert not carries_root("virtio_balloon", {})


def test_nothing_from_drivers_the_image_has_or_devices_that_do_not_matter(tmp_path: Path) -> None:
    devices = f"{DISK} module=virtio_blk in_image=yes\n{BALLOON} module=virtio_balloon in_image=no\n"
    devices += f"{NVME} module=- in_image=-\n"
    found = capture(tmp_path, devices)
    assert set(found) == {"root-device-missing"}


def test_a_disk_without_its_driver_alone_is_a_warning(tmp_path: Path) -> None:
    ok = "# rescue modcheck 1\nfstype btrfs source=blkid\nresult ok\n"
    found = capture(tmp_path, f"{DISK} module=virtio_blk in_image=no\n", ok)
    assert set(found) == {"device-driver-missing"}
    assert found["device-driver-missing"].severity == "warning"
