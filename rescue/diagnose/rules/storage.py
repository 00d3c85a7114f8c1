"""The disk controller's driver: the root's disk never appears because the image cannot drive it."""

from __future__ import annotations

from rescue.diagnose.rules.base import Context, Rule, add_modules, log


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
)
