"""The diagnosis rules, one module per family. RULES is their precedence: a line is claimed by the first
rule that matches it, so a specific rule (btrfs-crc32c-missing) comes before a general one
(module-unknown-symbol). A new rule is one entry in its family and one place here."""

from __future__ import annotations

from rescue.diagnose.rules import btrfs, firmware, modules, root
from rescue.diagnose.rules.base import Cause, Context, FixFn, Match, Rule

RULES: tuple[Rule, ...] = (
    btrfs.CRC32C_MISSING,
    btrfs.CSUM_UNSUPPORTED,
    modules.VERSION_MISMATCH,
    modules.UNKNOWN_SYMBOL,
    modules.FS_MODULE_MISSING,
    root.UNPACK_FAILED,
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
