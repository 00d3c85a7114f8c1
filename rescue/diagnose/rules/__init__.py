"""The diagnosis rules, one module per family. RULES is their precedence: a line is claimed by the first
rule that matches it, so a specific rule (btrfs-crc32c-missing) comes before a general one
(module-unknown-symbol). A new rule is one entry in its family and one place here."""

from __future__ import annotations

from rescue.diagnose.rules import btrfs, devices, firmware, fs, kernel, modules, root, stack, storage
from rescue.diagnose.rules.base import Cause, Context, FixFn, Match, Rule

RULES: tuple[Rule, ...] = (
    kernel.SIGNATURE_REJECTED,
    btrfs.CRC32C_MISSING,
    btrfs.CSUM_UNSUPPORTED,
    modules.VERSION_MISMATCH,
    modules.UNKNOWN_SYMBOL,
    storage.STORAGE_DRIVER_MISSING,
    devices.DEVICE_DRIVER_MISSING,
    # the layers under the root claim "unknown filesystem type 'LVM2_member'" before fs-module-missing
    stack.RESUME_DEVICE_MISSING,
    stack.CRYPT_UNLOCK_FAILED,
    stack.RAID_ASSEMBLY_FAILED,
    stack.LVM_VOLUME_MISSING,
    stack.ZFS_IMPORT_FAILED,
    modules.FS_MODULE_MISSING,
    fs.FS_CORRUPT,
    fs.FSCK_FAILED,
    root.UNPACK_FAILED,
    kernel.INITRAMFS_KERNEL_MISMATCH,
    kernel.INITRAMFS_MISSING,
    kernel.INIT_MISSING,
    kernel.KERNEL_OOPS,
    root.ROOT_DEVICE_MISSING,
    root.ROOT_MOUNT_FAILED,
    modules.MODULE_MISSING,
    modules.SOFTDEP_MISSING,
    firmware.FIRMWARE_MISSING,
)
RULE_IDS = tuple(r.id for r in RULES)
RULES_BY_ID = {r.id: r for r in RULES}
RULE_ORDER = {r.id: i for i, r in enumerate(RULES)}

__all__ = ["RULES", "RULES_BY_ID", "RULE_IDS", "RULE_ORDER", "Cause", "Context", "FixFn", "Match", "Rule"]
