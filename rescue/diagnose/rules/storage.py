"""The disk controller's driver: the root's disk never appears because the image cannot drive it."""

from __future__ import annotations

import re

from rescue.diagnose.rules.base import Cause, Context, Promote, Rule, add_modules, log

# Disk controllers and the disk layer above them: when one of these cannot load, no disk appears.
STORAGE_MODULES = re.compile(
    r"sd_mod|ahci|libahci|ata_piix|nvme|nvme_core|virtio_blk|virtio_scsi|megaraid_sas|mpt3sas|mptsas"
    r"|hv_storvsc|xen_blkfront|vmw_pvscsi|mmc_block|sdhci|uas|usb_storage"
)


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
    # never appears: that is why it did not.
    promote=Promote(
        ("module-unknown-symbol", "module-missing", "module-version-mismatch", "device-driver-missing"),
        "module",
        STORAGE_MODULES,
        derive=True,
        given=("root-device-missing",),
    ),
    caused_by=(
        Cause("module-unknown-symbol", (("module", "module"),)),
        Cause("module-missing", (("module", "module"),)),
        Cause("module-version-mismatch", (("module", "module"),)),
    ),
)
