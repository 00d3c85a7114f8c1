"""devices.txt read by the diagnosis: a disk controller without its driver names the module, and with the
root missing too, storage-driver-missing names it (virtio_blk, nvme)."""

from __future__ import annotations

from pathlib import Path

from rescue.diagnose.analyze import analyze_path
from rescue.diagnose.findings import Finding

DISK = "/sys/devices/pci0000:00/0000:00:04.0/virtio1 class=- modalias=virtio:d00000002v00001AF4"
NVME = "/sys/devices/pci0000:00/0000:00:05.0 class=0x010802 modalias=pci:v00008086d00000953sv0sd0bc01sc08i02"
BALLOON = "/sys/devices/pci0000:00/0000:00:06.0/virtio2 class=- modalias=virtio:d00000005v00001AF4"
ROOT_MISSING = "# rescue modcheck 1\nfstype unknown source=none\nrootdev /dev/vda missing\nresult ok\n"


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


def test_nvme(tmp_path: Path) -> None:
    found = capture(tmp_path, f"{NVME} module=nvme in_image=no\n")
    assert found["storage-driver-missing"].params["module"] == ["nvme"]


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
