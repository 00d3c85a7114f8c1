"""The disk controller's driver: the root's disk never appears because the image cannot drive it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from rescue.diagnose.rules.base import Cause, Context, Promote, Rule, add_modules, log

# Disk controllers and the disk layer above them, by the kernel names of the disks they carry.
_VIRTIO_BLK = r"virtio_blk|virtio_pci|virtio_mmio"  # with its transports, which carry virtio NICs as well
_SCSI = (  # SATA, PATA, SAS, hardware RAID, USB and the hypervisors' SCSI: all /dev/sd*
    r"sd_mod|ahci|libahci|ata_piix|ata_generic|pata_\w+|sata_\w+|virtio_scsi|megaraid_sas|mpt3sas|mpt2sas"
    r"|mptsas|mptspi|aacraid|hpsa|smartpqi|hv_storvsc|vmw_pvscsi|uas|usb_storage"
)
_NVME = r"nvme|nvme_core"
_XEN = r"xen_blkfront"
_MMC = r"mmc_block|sdhci\w*"
_IDE = r"ata_piix|ata_generic|pata_\w+|ide_disk|ide_gd_mod|ide_generic|ide_pci_generic|ide_core|piix"
# (kernel name of the root disk or partition, what can carry it)
_CARRIERS = tuple(
    (re.compile(rf"(?:/dev/)?{disk}"), re.compile(modules))
    for disk, modules in (
        (r"vd[a-z]+\d*", _VIRTIO_BLK),
        (r"sd[a-z]+\d*", _SCSI),
        (r"nvme\d+n\d+(?:p\d+)?", _NVME),
        (r"xvd[a-z]+\d*", _XEN),
        (r"mmcblk\d+(?:p\d+)?", _MMC),
        (r"hd[a-z]\d*", _IDE),
    )
)
# Any storage controller, for a root whose name does not tell its disk (UUID=, /dev/disk/by-*, /dev/mapper,
# /dev/md*, none): not the virtio transports, which a NIC alone may lack a driver for.
STORAGE_MODULES = re.compile("|".join(("virtio_blk", _SCSI, _NVME, _XEN, _MMC, _IDE)))
_CONTROLLERS = re.compile(f"{STORAGE_MODULES.pattern}|{_VIRTIO_BLK}")


def carries_root(module: str, told: Mapping[str, Sequence[str]]) -> bool:
    """Whether the controller `module` drives can carry the root device root-device-missing names (its lines,
    else ROOT= or root= of the capture): a typo'd root=/dev/vdb is not kept away by qemu's IDE controller."""
    carriers = []
    for name in told.get("device", ()):
        carrier = next((c for disk, c in _CARRIERS if disk.fullmatch(name)), None)
        if carrier is None:  # a name that does not tell the disk: any controller may carry it
            return STORAGE_MODULES.fullmatch(module) is not None
        carriers.append(carrier)
    if not carriers:
        return STORAGE_MODULES.fullmatch(module) is not None
    return any(c.fullmatch(module) for c in carriers)


def _fix_storage(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
    return add_modules(params.get("module") or ["virtio_pci"], ctx)


STORAGE_DRIVER_MISSING = Rule(
    id="storage-driver-missing",
    severity="error",
    title="the driver of the root's disk ({module}) is not in the initramfs",
    matches=(
        # fs/fuse/virtio_fs.c: virtiofs is there, but no virtio device carries the tag: no virtio transport
        log("virtio-fs: tag", r"virtio-fs: tag <(?P<tag>[^>]*)> not found"),
    ),
    fix=_fix_storage,
    constants=(("module", "virtio_pci"),),
    # A storage module that cannot load (unknown symbol, missing from the image) while the root's device
    # never appears, and a controller of that module can carry the root the boot names: that is why it did
    # not. Another disk's controller without its driver stays a warning (device-driver-missing) of its own.
    promote=Promote(
        ("module-unknown-symbol", "module-missing", "module-version-mismatch", "device-driver-missing"),
        "module",
        _CONTROLLERS,
        derive=True,
        given=("root-device-missing",),
        fits=carries_root,
    ),
    caused_by=(
        Cause("module-unknown-symbol", (("module", "module"),)),
        Cause("module-missing", (("module", "module"),)),
        Cause("module-version-mismatch", (("module", "module"),)),
    ),
)
